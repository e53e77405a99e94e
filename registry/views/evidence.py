"""The evidence reply in a notice's thread: schema and dependency changes against
Production, what is missing, and the pictures' captions (SPEC 15). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from registry.rules.evidence import RequirementsDiff, SchemaDiff
from registry.rules.text import SECTION_TEXT, escape, fit_lines, link

BREAKING = ":warning: *breaking*"
NO_SIGNATURE = "no signature logged"
NO_REQUIREMENTS = "no requirements.txt"
REST = "the rest in MLflow"


@dataclass(frozen=True)
class EvidenceFacts:
    """What the reply says; a diff is None where there is nothing to compare with."""

    model_name: str
    version: str
    production_version: str = ""
    schema: SchemaDiff | None = None
    schema_note: str = ""  # said instead of a diff: no signature, unreadable, no Production
    requirements: RequirementsDiff | None = None
    requirements_note: str = ""
    missing: tuple[str, ...] = ()  # what the version did not log, said in one line
    problems: tuple[str, ...] = ()  # one line each: an artifact too large, unreadable...
    pictures: tuple[str, ...] = ()  # the run's pictures that follow in the thread
    chart: bool = False
    url: str = ""  # the version in MLflow


def evidence_text(facts: EvidenceFacts) -> str:
    """Return the reply's mrkdwn, within a section's 3,000 characters."""
    against = f" against Production v{facts.production_version}" if facts.production_version else ""
    lines = [f"*Evidence for {escape(facts.model_name)} v{facts.version}*{against}"]
    lines += _schema_lines(facts)
    lines += _requirements_lines(facts)
    # What is missing and what went wrong name artifacts and errors: outside text, escaped.
    if facts.missing:
        lines.append(":warning: Not logged: " + escape("; ".join(facts.missing)) + ".")
    lines += [f":warning: {escape(p)}" for p in facts.problems]
    follows = [
        *(f"`{escape(p)}`" for p in facts.pictures),
        *(["the metric trend"] if facts.chart else []),
    ]
    if follows:
        lines.append("Below: " + ", ".join(follows) + ".")
    rest = link(facts.url, REST) if facts.url else ""
    return fit_lines(lines, SECTION_TEXT, link=rest)


def _schema_lines(facts: EvidenceFacts) -> list[str]:
    diff = facts.schema
    if diff is None:
        return [f"*Schema*: {facts.schema_note}"] if facts.schema_note else []
    if diff.unchanged:
        return ["*Schema*: unchanged"]
    head = "*Schema*: " + (
        f"changed, {BREAKING} for the serving side" if diff.breaking else "changed"
    )
    lines = [head]
    lines += [f"• removed input `{escape(n)}` ({escape(t)}) {BREAKING}" for n, t in diff.removed]
    lines += [
        f"• retyped input `{escape(n)}`: {escape(old)} → {escape(new)} {BREAKING}"
        for n, old, new in diff.retyped
    ]
    lines += [f"• added input `{escape(n)}` ({escape(t)})" for n, t in diff.added]
    lines += [f"• outputs changed: {escape(change)}" for change in diff.outputs_changed]
    return lines


def _requirements_lines(facts: EvidenceFacts) -> list[str]:
    diff = facts.requirements
    if diff is None:
        return [f"*Dependencies*: {facts.requirements_note}"] if facts.requirements_note else []
    if diff.unchanged:
        return ["*Dependencies*: unchanged"]
    lines = ["*Dependencies*: changed"]
    lines += [f"• added `{_pin(n, p)}`" for n, p in diff.added]
    lines += [
        f"• re-pinned `{escape(n)}`: {escape(old) or 'unpinned'} → {escape(new) or 'unpinned'}"
        for n, old, new in diff.repinned
    ]
    lines += [f"• removed `{_pin(n, p)}`" for n, p in diff.removed]
    return lines


def _pin(name: str, pin: str) -> str:
    return escape(f"{name}{pin}")


def problems_text(model_name: str, version: str, problems: Sequence[str]) -> str:
    """Return the closing reply naming each upload that failed, one line each."""
    head = f"*Evidence for {escape(model_name)} v{version}*: not everything could be shown"
    return fit_lines([head, *(f":warning: {escape(p)}" for p in problems)], SECTION_TEXT)


def chart_title(model_name: str) -> str:
    """Return the trend chart's title (plain text: it is drawn, not sent as mrkdwn)."""
    return f"{model_name}: metrics over the last versions"
