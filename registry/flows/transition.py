"""Transition requests: a move into Production that the gate inside MLflow refused (SPEC 14).

The version is staged if it is not (its gates apply) and gets an ordinary approval notice
that names who asked through MLflow and when; from there it is decided like any notice.
Whoever asked is barred from approving it, and nothing more: asking makes nobody its
requester (who may withdraw it). Asking again posts nothing new: one thread note at most.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from registry.flows.lifecycle import apply_gates, stage_version
from registry.flows.notice import refresh_notice, thread
from registry.ports.services import Services
from registry.rules.decisions import ASKED_AT, asked_in_mlflow, asker_key, same_person
from registry.rules.record import prefixed
from registry.rules.text import escape, format_time
from registry.rules.versions import ModelVersion, VersionNotFound

log = logging.getLogger(__name__)

ASKED_AT_TAG = f"registry_bot.{ASKED_AT}"
SOMEONE = "someone (the MLflow server does not sign people in)"


def request_production(
    svc: Services, name: str, version: str, *, asked_by: str, asked_at: float, event_id: str
) -> str:
    """File the request: stage and notice the version once; a repeat adds a thread note."""
    try:
        mv = svc.gateway.get_version(name, version)
    except VersionNotFound:
        log.info("asked for a version that is gone", extra=_ctx(event_id, name, version))
        return "missing"
    if mv.stage == "Production":
        return "already_production"
    if mv.tag("notice_ts") or mv.tag("decision") or mv.stage == "Archived":
        mv = _gate_noticed(svc, mv)
        _claim_unasked(svc, mv, asked_by)
        thread(svc, mv, asked_again(mv, asked_by, asked_at), once="asked_in_mlflow")
        return "already_requested"
    mv = _note_asker(svc, mv, asked_by, asked_at)
    return stage_version(svc, name, version, event_id=event_id, known=mv).outcome


def asked_line(asked_by: str, asked_at: float) -> str:
    """Say who asked through MLflow and when (plain text: the notice escapes it)."""
    who = asked_by or SOMEONE
    return f"Asked for Production in MLflow by {who} at {format_time(asked_at)}."


def asked_again(mv: ModelVersion, asked_by: str, asked_at: float) -> str:
    """The thread note for a request made where a notice already is: nothing new is filed."""
    who = escape(asked_by or SOMEONE)
    asked = f"{who} asked in MLflow at {format_time(asked_at)} to make v{mv.version} Production"
    if mv.tag("decision") or mv.stage != "Staging":
        return f"{asked}; it no longer awaits a decision, so nothing was filed."
    return f"{asked}; this notice is that request, so nothing new was filed."


def _note_asker(svc: Services, mv: ModelVersion, asked_by: str, asked_at: float) -> ModelVersion:
    """Record who asked and when, and say so in the notice's text."""
    wanted = {ASKED_AT_TAG: str(asked_at), **_asker_tags(mv, asked_by)}
    if not mv.tag("description"):
        wanted.update(prefixed({"description": asked_line(asked_by, asked_at)}))
    svc.gateway.set_tags(mv.name, mv.version, wanted)
    return replace(mv, tags={**mv.tags, **wanted})


def _gate_noticed(svc: Services, mv: ModelVersion) -> ModelVersion:
    """A candidate noticed with no gates verdict (moved to Staging by hand before its
    model had gates) has them evaluated now; a failing one is no longer approvable."""
    if mv.stage != "Staging" or mv.tag("decision") or mv.tag("gates"):
        return mv
    gated = apply_gates(svc, mv)
    if gated.tag("gates") == "failed":
        refresh_notice(svc, gated)
    return gated


def _claim_unasked(svc: Services, mv: ModelVersion, asked_by: str) -> None:
    """A candidate already noticed records its new asker too, so their own Approve is
    refused; it gives them nothing more (they never become its requester)."""
    if mv.tag("decision") or mv.stage != "Staging":
        return
    wanted = _asker_tags(mv, asked_by)
    if wanted:
        svc.gateway.set_tags(mv.name, mv.version, wanted)


def _asker_tags(mv: ModelVersion, asked_by: str) -> dict[str, str]:
    """The tag that adds `asked_by` to the version's askers, whom approving is barred."""
    if not asked_by or same_person(asked_by) in {same_person(w) for w in asked_in_mlflow(mv)}:
        return {}
    return prefixed({asker_key(asked_by): asked_by})


def _ctx(event_id: str, name: str, version: str) -> dict[str, str]:
    return {"event_id": event_id, "model": name, "version": version}
