"""The work queue: task names, the Celery settings every process shares, and the producer.

The front doors (webhooks, bot) enqueue through `Producer` with keyword-only
primitive arguments; only the worker imports the tasks themselves.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from registry.rules.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

TASK_STAGE_EVENT = "registry_bot.stage_training_event"
TASK_STAGE_VERSION = "registry_bot.stage_version"
TASK_APPROVE = "registry_bot.approve"
TASK_REJECT = "registry_bot.reject"
TASK_COMMAND = "registry_bot.command"
TASK_ROLLBACK = "registry_bot.rollback"
TASK_DELIVER_EVENT = "registry_bot.deliver_event"
TASK_CANARY = "registry_bot.canary_verdict"
TASK_SWEEP = "registry_bot.sweep"
TASK_PROTECT = "registry_bot.check_production"
TASK_REVERT = "registry_bot.revert"
TASK_ACCEPT = "registry_bot.accept"
TASK_PUBLISH_HOME = "registry_bot.publish_home"
TASK_ALERT = "registry_bot.alert"
TASK_GATE_REQUEST = "registry_bot.gate_request"  # a move into Production the gate stopped
TASK_TELL = "registry_bot.tell"  # an answer the bot could not get to Slack itself
TASK_EVIDENCE = "registry_bot.post_evidence"  # a notice's evidence, in its thread
HOST = socket.gethostname()  # in a task message's origin, as Celery writes it

# A worker killed whole (main process and pool: a lost node, an OOM-killed container) never
# acks what it held, and Redis gives a message back only once it has been unacked for
# VISIBILITY_TIMEOUT seconds. A live worker renews what it holds every HELD_RENEW_EVERY
# seconds (`renew_held`), so only a dead worker's messages ever grow that old, however long
# a task runs or a retry's countdown waits; every worker looks for them at start and every
# RESTORE_SCAN_EVERY seconds. A dead worker's work thus runs again at most
# VISIBILITY_TIMEOUT + RESTORE_SCAN_EVERY seconds after its death, or at once when a worker
# starts later than that (SPEC 8: within 2 minutes of a worker running again).
VISIBILITY_TIMEOUT = 60
HELD_RENEW_EVERY = 10
RESTORE_SCAN_EVERY = 5

# kombu's Redis transport takes a message off the queue with BRPOP and records it as
# unacked only after that reply is read: a worker killed in between loses the message for
# good (kombu#305, celery#7950; the chaos soak lost a retried event this way). So every
# task message is also written to a journal when it is queued, and struck off once a worker
# has it recorded as unacked (Celery's task_received). An entry older than JOURNAL_GRACE
# that is neither waiting in the queue nor held unacked was lost in that gap and is queued
# again (`resend_lost`, run by one worker every RESEND_EVERY seconds): at least once, never
# lost, and every task is idempotent. An entry sent again RESEND_LIMIT times is given up.
JOURNAL_GRACE = 30
RESEND_EVERY = 10
RESEND_LIMIT = 5
UNACKED = "unacked"  # kombu's hash of held messages (its default `unacked_key`)


class QueueUnavailable(RuntimeError):
    """The broker did not take the task; nothing was enqueued."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings shared by the producers and the worker."""
    return {
        "task_default_queue": settings.queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # Ack after the task ran, and redeliver if the worker process died mid-task:
        # every task is idempotent, so running twice is safe and losing one is not.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            # kombu scans only every (interval x throttle) seconds by default (100 s).
            "unacked_restore_interval": RESTORE_SCAN_EVERY,
            "unacked_restore_throttle": 1,
            # The scan's mutex outlives a worker killed while scanning by this long, not 300 s.
            "unacked_mutex_expire": 15,
            "socket_connect_timeout": 2,
            # A producer (webhooks, bot) must fail fast when Redis is down, so the
            # sender gets its 503 and the clicker is told to try again at once.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
            # REDIS_KEY_PREFIX before every key and channel kombu uses: the queue's list,
            # `unacked`, its index and mutex, the bindings, the pidbox and event channels.
            "global_keyprefix": settings.redis_key_prefix,
        },
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


def celery_app(settings: Settings, **options: Any) -> Celery:
    """Build a Celery app on the settings' broker with the shared configuration."""
    from celery import Celery  # only the worker needs it: the doors enqueue without it

    app = Celery("registry_bot", broker=settings.redis_url, **options)
    app.conf.update(celery_config(settings))
    return app


def renew_held(channel: Any, now: float | None = None) -> int:
    """Mark every message `channel` holds unacked as just delivered; return how many."""
    qos = channel.qos
    # kombu's QoS lists the channel's unacked delivery tags in `_delivered` (acked ones stay
    # in `_dirty` until flushed) and has no public way to read them.
    held = [tag for tag in list(qos._delivered) if tag not in qos._dirty]
    if held:
        stamp = time.time() if now is None else now
        with channel.conn_or_acquire() as client:
            # XX: only renew what is still unacked, never re-add one acked meanwhile.
            client.zadd(channel.unacked_index_key, dict.fromkeys(held, stamp), xx=True)
    return len(held)


def task_message(
    task: str, kwargs: dict[str, Any], *, task_id: str, queue: str, headers: dict[str, Any]
) -> dict[str, Any]:
    """Return a Celery task message (protocol 2) as kombu's Redis transport keeps it in a list.

    It is what `Celery.send_task` would store for keyword arguments alone, with no eta,
    expiry, retry or workflow: the header and body fields of Celery's message protocol 2,
    inside the envelope kombu's virtual transport writes (body base64-encoded JSON).
    """
    body = json.dumps(
        [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    celery_headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": repr(kwargs),
        "origin": f"gen{os.getpid()}@{HOST}",
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        **headers,
    }
    return envelope(body, celery_headers, exchange="", routing_key=queue)


def envelope(
    body: str, headers: dict[str, Any], *, exchange: str, routing_key: str, reply_to: str = ""
) -> dict[str, Any]:
    """Wrap a task message's JSON body and headers as kombu's Redis transport stores them."""
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": headers["id"],
            "reply_to": reply_to,
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def journal_keys(queue: str) -> tuple[str, str]:
    """Return the journal's hash (task id -> entry) and its index (task id -> sent at)."""
    return f"{queue}:journal", f"{queue}:journal:sent"


def journal_entry(raw: str, resent: int = 0) -> str:
    """Return a journal entry: the message exactly as queued, and how often it was resent."""
    return json.dumps({"message": raw, "resent": resent})


def journal(pipe: Any, queue: str, task_id: str, raw: str, at: float) -> None:
    """Add the writes that journal one queued message to `pipe` (a Redis pipeline)."""
    entries, index = journal_keys(queue)
    pipe.hset(entries, task_id, journal_entry(raw))
    pipe.zadd(index, {task_id: at})


def strike_off(client: redis.Redis, queue: str, *task_ids: str) -> None:
    """Remove messages from the journal: a worker holds them now (kombu can give them back),
    or they are given up."""
    entries, index = journal_keys(queue)
    pipe = client.pipeline(transaction=False)
    pipe.hdel(entries, *task_ids)
    pipe.zrem(index, *task_ids)
    pipe.execute()


def resend_lost(
    client: redis.Redis,
    queue: str,
    *,
    now: float | None = None,
    grace: float = JOURNAL_GRACE,
    unacked: str = UNACKED,
) -> list[str]:
    """Queue again every journaled message older than `grace` that is neither waiting in the
    queue nor held unacked; return their task ids.

    `queue` is the queue's Redis list and `unacked` kombu's hash, both under the
    deployment's key prefix (Settings.queue_key, Settings.redis_key(UNACKED)).

    The queue is read before the held messages, so a message moving from one to the other
    meanwhile is seen in the second; one struck off meanwhile is not sent again.
    """
    now = time.time() if now is None else now
    _, index = journal_keys(queue)
    stale = {_text(t) for t in client.zrangebyscore(index, "-inf", now - grace, 0, 500)}
    if not stale:
        return []
    waiting = {_message_id(raw) for raw in client.lrange(queue, 0, -1)} & stale
    held = {_message_id(json.loads(raw)[0]) for raw in client.hvals(unacked)} & stale
    if held:  # struck off late (a worker died just after taking it): kombu has it
        strike_off(client, queue, *held)
    return [t for t in sorted(stale - waiting - held) if _resend(client, queue, t, now)]


def _resend(client: redis.Redis, queue: str, task_id: str, now: float) -> bool:
    """Queue one lost message again, under a delivery tag of its own; give it up past
    RESEND_LIMIT resends. Say whether it was queued."""
    entries, index = journal_keys(queue)
    found = client.hget(entries, task_id)
    if found is None:
        return False  # a worker took it just now
    entry = json.loads(found)
    message = json.loads(entry["message"])
    what = {"task_id": task_id, "task": message["headers"].get("task"), **_about(message)}
    if entry["resent"] >= RESEND_LIMIT:
        log.error("a queued task was lost %s times; giving up", entry["resent"], extra=what)
        strike_off(client, queue, task_id)
        return False
    # A delivery tag of its own: kombu keys what a worker holds by it.
    message["properties"]["delivery_tag"] = str(uuid.uuid4())
    raw = json.dumps(message)
    pipe = client.pipeline(transaction=True)
    pipe.hset(entries, task_id, journal_entry(raw, entry["resent"] + 1))
    pipe.zadd(index, {task_id: now})
    pipe.lpush(queue, raw)
    pipe.execute()
    log.warning("queued again: a task lost between the queue and a worker", extra=what)
    return True


def _about(message: dict[str, Any]) -> dict[str, str]:
    """Return the event id and model a queued message's task is about, for its log lines."""
    try:
        kwargs = json.loads(base64.b64decode(message["body"]))[1]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}
    found = {"event_id": kwargs.get("event_id"), "model": kwargs.get("model_name")}
    return {k: str(v) for k, v in found.items() if v}


def _message_id(message: Any) -> str:
    """Return the task id of a queued message (raw JSON or decoded)."""
    decoded = json.loads(message) if isinstance(message, bytes | str) else message
    return str((decoded.get("headers") or {}).get("id", ""))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Producer:
    """Sends tasks by name: keyword-only primitive arguments and an `enqueued_at` header.

    A task is one LPUSH of a prepared message onto the queue's list (with its journal entry,
    in the same transaction), on a Redis client the
    process keeps: what `Celery.send_task` ends in, without its per-call routing, message
    building and (in kombu's Redis transport) a new client object per message, which made
    up most of an enqueue's time. With `celery`, tasks go through its `send_task` instead
    (tests hand in a recording stand-in).
    """

    def __init__(self, settings: Settings, *, celery: Any = None):
        self.celery = celery
        self.queue = settings.queue
        self.key = settings.queue_key  # the queue's list, under REDIS_KEY_PREFIX
        # Fail fast with Redis down (one immediate retry, short timeouts): the sender gets
        # its 503 and the clicker is told to try again at once. A retried LPUSH may queue
        # a task twice, which is harmless (every task is idempotent); losing one is not.
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=2,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 1),
        )

    def send(self, task: str, /, **kwargs: Any) -> None:
        """Enqueue `task`; raise QueueUnavailable if the broker does not take it."""
        headers = {"enqueued_at": time.time()}
        try:
            if self.celery is not None:
                self.celery.send_task(task, kwargs=kwargs, retry=False, headers=headers)
                return
            task_id = str(uuid.uuid4())
            message = task_message(task, kwargs, task_id=task_id, queue=self.queue, headers=headers)
            raw = json.dumps(message)
            # One round trip, all or nothing: the message and its journal entry.
            pipe = self.redis.pipeline(transaction=True)
            journal(pipe, self.key, task_id, raw, headers["enqueued_at"])
            pipe.lpush(self.key, raw)
            pipe.execute()
        except Exception as exc:  # kombu raises several types for an unreachable broker
            ctx = {
                "task": task,
                "model": kwargs.get("model_name"),
                "event_id": kwargs.get("event_id"),
            }
            log.error("enqueue failed: %s", exc, extra=ctx)
            raise QueueUnavailable(str(exc)) from exc
