"""Front doors: webhooks accept latency against a bare endpoint, and the bot's click ack."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from bench.load import (
    Request,
    Samples,
    click_request,
    closed_loop,
    front_door_request,
    in_turn,
    open_loop,
    post,
    together,
)
from bench.stack import CLICKERS

SATURATION_THREADS = 8
WARMUP_REQUESTS = 50
SLICES = 5  # each load run is cut in slices that alternate between the two endpoints


def compare_doors(
    bare_url: str, hooks_url: str, *, rate: float, seconds: float, saturation_seconds: float
) -> dict[str, Samples]:
    """Load the bare endpoint and /hooks/training alike, in alternating slices (drift hits both)."""
    makers = {
        name: partial(front_door_request, url)
        for name, url in (("bare", bare_url), ("hooks", hooks_url))
    }
    for make in makers.values():
        _warm(make)
    out = {f"{name}_{kind}": Samples() for kind in ("open", "closed") for name in makers}
    for i in range(SLICES):
        for name in in_turn(list(makers), i):
            out[f"{name}_open"].extend(open_loop(makers[name], rate, seconds / SLICES))
    for i in range(SLICES):
        for name in in_turn(list(makers), i):
            slice_seconds = saturation_seconds / SLICES
            out[f"{name}_closed"].extend(
                closed_loop(makers[name], SATURATION_THREADS, slice_seconds)
            )
    return out


def _warm(make: Callable[[], Request]) -> None:
    for _ in range(WARMUP_REQUESTS):
        post(make())


def click_rounds(
    bot_url: str, slack_url: str, staged: list[tuple[str, str]], bare_url: str = ""
) -> tuple[Samples, Samples]:
    """Have every clicker press Approve at once on each staged version, round by round.

    With `bare_url`, each round first sends the same 20 requests to the bare endpoint: what
    the harness and gunicorn alone cost at that concurrency.
    """
    bot, bare = Samples(), Samples()
    for model_name, version in staged:
        clicks = [
            click_request(bot_url, u, model_name, version, slack_url=slack_url) for u in CLICKERS
        ]
        if bare_url:
            bare.extend(together([(f"{bare_url}/slack/events", b, h) for _, b, h in clicks]))
        bot.extend(together(clicks))
        time.sleep(0.3)  # let the worker take the round's approvals off the queue
    return bot, bare


def single_clicks(bot_url: str, slack_url: str, staged: tuple[str, str], count: int) -> Samples:
    """Click Approve one at a time: the bot's own time per click, with no queueing."""
    samples = Samples()
    for i in range(count):
        took, status = post(
            click_request(bot_url, CLICKERS[i % len(CLICKERS)], *staged, slack_url=slack_url)
        )
        samples.add(took, status)
    return samples
