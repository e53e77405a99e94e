"""The Bolt app: listeners per group, one error handler, enqueueing slow work."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, App, BoltContext, BoltRequest, BoltResponse, Respond
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient, WebhookResponse

from bot.deps import OTHER_WORKSPACE, Deps
from bot.listeners import commands, decisions, home
from registry.adapters.dedup import DeliveryLedger
from registry.adapters.directory import SlackDirectory
from registry.adapters.queue import TASK_TELL, Producer
from registry.adapters.slack import retry_handlers, web_client
from registry.process import preflight
from registry.rules.settings import Settings, SettingsError

log = logging.getLogger(__name__)

ACK_DEADLINE = 3.0  # seconds: Slack's, and how long Bolt waits for a listener's ack()
LISTENER_THREADS = 5  # Bolt's default


def start_app(settings: Settings, *, socket_mode: bool = False) -> App:
    """Check the Slack setup (registry.process.preflight), then build the Bolt app for serving.

    A token Slack refuses raises SettingsError. Bolt asks auth.test while it builds the
    app and fails on no answer; when Slack did not answer the checks, it is left to ask on
    the first request instead, so a Slack outage at start is no crash loop.
    """
    answered = preflight.check(settings)
    return build_app(settings, socket_mode=socket_mode, verify_token=answered)


def build_app(
    settings: Settings, *, socket_mode: bool = False, celery: Any = None, verify_token: bool = True
) -> App:
    """Build the Bolt app with every listener group registered.

    The transport is the caller's explicit choice, never read off which tokens are set: an
    app-level token in the shared settings must not switch signature checks off for an HTTP
    endpoint. Over HTTP every request is verified, and a signing secret is required.
    """
    if not socket_mode and not settings.slack_signing_secret:
        raise SettingsError("SLACK_SIGNING_SECRET is required but not set")
    client = web_client(settings)
    executor = AckWaitingExecutor(LISTENER_THREADS)
    app = App(
        client=client,  # carries the token, the base URL and the retry handlers
        listener_executor=executor,
        signing_secret=settings.slack_signing_secret or None,
        # Socket Mode envelopes come over a WebSocket the bot opened: there is nothing to sign.
        request_verification_enabled=not socket_mode,
        raise_error_for_unhandled_request=False,
        token_verification_enabled=verify_token,
    )
    deps = Deps(
        settings,
        SlackDirectory(settings, client),
        Producer(settings, celery=celery),
        DeliveryLedger(settings),
    )
    _add_middleware(app, executor, deps)
    decisions.register(app)
    commands.register(app, settings.slack_command)
    home.register(app)
    app.error(on_error)
    return app


def _add_middleware(app: App, executor: AckWaitingExecutor, deps: Deps) -> None:
    """Run before every listener: note its ack, hand it `deps` and a retrying `respond`,
    drop other workspaces' requests and Slack's retries of what we already had."""

    @app.middleware
    def wake_on_ack(context: BoltContext, next):  # noqa: A002 (Bolt's argument name)
        context["ack"] = executor.expect_ack()
        next()

    @app.middleware
    def provide_deps(context: BoltContext, next):  # noqa: A002 (Bolt's argument name)
        context["deps"] = deps
        if context.response_url:
            context["respond"] = RetryingRespond(
                response_url=context.response_url, fallback=_fallback(context, deps)
            )
        next()

    app.middleware(only_our_workspace)
    app.middleware(once_per_event)


class SignallingAck(Ack):
    """Bolt's `ack`, which also says when it was called (or the listener ended without it)."""

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self.done.set()


class AckWaitingExecutor(ThreadPoolExecutor):
    """Bolt's listener executor; a listener handed over returns the request as soon as it acks.

    Bolt (with `process_before_response=False`) starts the listener on its executor and
    then polls `ack.response` every 10 ms, so every click held its server thread 10 ms
    longer than it needed, and under 20 clickers at once those sleeps queued up. Here
    `submit` waits for the request's `SignallingAck` (set by `expect_ack` in the request's
    thread) or for the listener's end, so Bolt finds the ack given and answers at once.
    The listener itself still runs on the executor after its `ack()`, as before: nothing
    it calls (Slack, the queue) moves in front of the answer.
    """

    def __init__(self, max_workers: int):
        super().__init__(max_workers, thread_name_prefix="bolt-listener")
        self._pending = threading.local()

    def expect_ack(self) -> SignallingAck:
        """Return the ack for the request this thread dispatches; the next submit waits on it."""
        self._pending.ack = ack = SignallingAck()
        return ack

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Start `fn`; when it is this thread's listener, return once it acked or ended."""
        future = super().submit(fn, *args, **kwargs)
        ack: SignallingAck | None = getattr(self._pending, "ack", None)
        if ack is not None:  # lazy listeners (none here) and later submits do not wait
            self._pending.ack = None
            future.add_done_callback(lambda _: ack.done.set())
            ack.done.wait(ACK_DEADLINE)
        return future


Fallback = Callable[[str, dict[str, Any]], None]


class RetryingRespond(Respond):
    """Bolt's `respond`, retrying a response URL's 429s and 5xx as every other Slack call does,
    and saying it with `chat.postEphemeral` when the response URL still will not take it.

    Bolt's own retries only a refused connection, so a Slack hiccup would lose a refusal
    or a "try again" silently: the person would never hear why nothing happened.
    """

    def __init__(self, *, response_url: str, fallback: Fallback | None = None, **kw: Any):
        super().__init__(response_url=response_url, **kw)
        self.fallback = fallback

    def __call__(self, text: str = "", **message: Any) -> WebhookResponse:  # type: ignore[override]
        client = WebhookClient(
            str(self.response_url), proxy=self.proxy, ssl=self.ssl, retry_handlers=retry_handlers()
        )
        resp = client.send(text=text, **message)
        if resp.status_code != 200:
            log.error("could not answer through the response URL: %s", resp.status_code)
            if self.fallback is not None:
                self.fallback(text, message)
        return resp


def _fallback(context: BoltContext, deps: Deps) -> Fallback | None:
    """Return how to tell the person who clicked or typed when the response URL will not
    take it: `chat.postEphemeral` in that channel (Slack limits it apart from response
    URLs), else the worker's `tell` task, which keeps trying while Slack is busy."""
    channel, user, client = context.channel_id, context.user_id, context.client
    response_url = context.response_url or ""
    if not (channel and user and client):
        return None

    def tell(text: str, message: dict[str, Any]) -> None:
        try:
            client.chat_postEphemeral(
                channel=channel, user=user, text=text, blocks=message.get("blocks")
            )
            return
        except SlackApiError as exc:
            log.error(
                "could not answer with chat.postEphemeral either: %s", exc.response.status_code
            )
        queued = deps.enqueue(
            TASK_TELL,
            event_id=f"tell-{uuid.uuid4().hex}",
            channel=channel,
            user=user,
            response_url=response_url,
            text=text,
        )
        if not queued:
            log.error("could not queue the answer either; it is lost", extra={"user": user})

    return tell


def only_our_workspace(context: BoltContext, next, logger: logging.Logger):  # noqa: A002
    """Refuse requests from any workspace but the one the bot token belongs to."""
    ours = context.authorize_result.team_id if context.authorize_result else None
    theirs = context.team_id
    if ours and theirs and theirs != ours:
        logger.warning(
            "refused a request from workspace %s", theirs, extra={"user": context.user_id}
        )
        return BoltResponse(status=403, body=OTHER_WORKSPACE)
    return next()


def once_per_event(
    body: dict,
    context: BoltContext,
    request: BoltRequest,
    next,
    logger: logging.Logger,  # noqa: A002
):
    """Acknowledge a redelivered Events API event without running it again.

    Slack redelivers an event it thinks was missed (X-Slack-Retry-Num over HTTP,
    retry_attempt in Socket Mode) up to three times. Ignoring every retry would lose
    an event whose first delivery really failed, so each event id is taken once, in
    Redis, shared by every bot copy a retry may reach.
    """
    event_id = body.get("event_id", "") if body.get("type") == "event_callback" else ""
    if event_id and not context["deps"].ledger.first_delivery(event_id):
        retry = (request.headers.get("x-slack-retry-num") or [""])[0]
        logger.info("redelivered event ignored", extra={"event_id": event_id, "retry": retry})
        return BoltResponse(status=200, body="")
    return next()


def on_error(error: Exception, body: dict, logger: logging.Logger) -> None:
    """Log any listener failure once, with what Slack sent."""
    user = (body.get("user") or {}).get("id") or body.get("user_id", "")
    logger.exception("listener failed: %s", error, extra={"user": user})
