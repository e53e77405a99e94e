"""What the gate refuses, and what it says: pure, on the request as MLflow parsed it.

A change to a protected model's Production (SPEC 14) is refused unless registry-bot makes
it: a stage transition into or out of Production, setting or deleting the production alias,
deleting a version in Production, deleting or renaming the registered model. So is writing
registry-bot's own record (`registry_bot.*` tags) of such a model, since the record is what
registry-bot acts on (an `approved` decision tag is finished by the sweep).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from registry.rules.governance import channel_of
from registry.rules.settings import Settings

HEADER = "X-Registry-Bot-Gate"  # carries MLFLOW_GATE_TOKEN on registry-bot's own requests
RECORD_PREFIX = "registry_bot."
PRODUCTION = "production"

PROMPT_TAG = "mlflow.prompt.is_prompt"  # MLflow keeps prompts as registered models so tagged
DECIDED = "approved"  # registry_bot.decision of a version registry-bot is promoting
ARCHIVED = "archived"
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")

REFUSED = (
    "{model} is protected by registry-bot: {what} is refused outside registry-bot, and "
    "nothing changed. Changes to its Production go through registry-bot: ask an approver "
    "in Slack{channel}."
)
FILED = (
    "{model} is protected by registry-bot: version {version} was not moved, and nothing "
    "changed. Your request to make it Production is filed: an approver decides it in "
    "Slack{channel}; the person who asked never approves their own request."
)
NOT_FILED = (
    "{model} is protected by registry-bot: version {version} was not moved, and nothing "
    "changed. Your request could not be filed (registry-bot's queue did not answer): try "
    "again in a minute."
)
NOT_ASKED = (
    "{model} is protected by registry-bot: {what} is refused outside registry-bot, and "
    "nothing changed. Nothing was filed: {why}."
)
WEBHOOKS = (
    "MLflow's webhooks are protected by registry-bot, which relies on them to see a change "
    "to a protected model at once: creating, changing, deleting or testing one is refused "
    "outside registry-bot, and nothing changed. Ask an approver in Slack{channel}."
)
UNDECIDED = (
    "{model} may be protected by registry-bot, which could not check this request just now "
    "({why}), so it is refused and nothing changed: try again in a minute, or ask an "
    "approver in Slack{channel}."
)


@dataclass(frozen=True)
class Ask:
    """One registry write, as the gate reads it from MLflow's own parse of the request."""

    kind: str  # stage, set_alias, delete_alias, delete_version, delete_model, rename, tags,
    # webhook (a write to MLflow's webhooks, which SPEC 11's at-once detection relies on)
    model: str
    version: str = ""
    stage: str = ""  # the target stage of a transition, as sent
    alias: str = ""
    new_name: str = ""  # a rename's new name
    tag_keys: tuple[str, ...] = ()
    model_tag: bool = False  # tag_keys are the registered model's (not a version's)


@dataclass(frozen=True)
class Standing:
    """Where a version stands in MLflow now."""

    stage: str
    aliases: tuple[str, ...] = ()
    stage_tag: str = ""  # registry_bot.stage (STAGE_TAG): the stage of aliases mode
    version: str = ""  # the version as MLflow resolved it ("01" is version 1)
    decision: str = ""  # registry_bot.decision: "approved" while registry-bot promotes it

    def decided(self) -> str:
        """Return how the version was decided ("rejected", "archived", …), or '' while it
        may still be asked for: registry-bot's worker files nothing for a decided one."""
        if self.decision and self.decision.lower() != DECIDED:
            return self.decision.lower()
        archived = ARCHIVED in (self.stage.lower(), self.stage_tag.lower())
        return ARCHIVED if archived else ""

    def in_production(self, production_alias: str) -> bool:
        """Say whether the version is Production by stage, alias or registry-bot's tag, or
        is about to be: registry-bot has approved it and is promoting it."""
        held = {a.lower() for a in self.aliases}
        return (
            self.stage.lower() == PRODUCTION
            or self.stage_tag.lower() == PRODUCTION
            or production_alias.lower() in held
            or self.decision.lower() == DECIDED
        )


@dataclass(frozen=True)
class Found:
    """A registered model as MLflow has it: its stored name and whether it is a prompt."""

    name: str
    prompt: bool = False


@dataclass(frozen=True)
class Verdict:
    """The gate's answer: pass, or refuse (and with `request`, file it as a request)."""

    refuse: bool
    what: str = ""  # what was refused, for the message: "deleting the registered model"
    request: str = ""  # the version asked into Production, when the refusal files a request
    why_not: str = ""  # why a move into Production is refused without filing anything


PASS = Verdict(False)
Lookup = Callable[[str, str], Standing | None]  # (model, version) -> standing; None: no such
FindModel = Callable[[str], Found | None]  # model name -> the model as stored; None: no such


def judge(ask: Ask, settings: Settings, lookup: Lookup, find: FindModel | None = None) -> Verdict:
    """Decide one write by someone who is not registry-bot; `lookup` raising fails closed.

    `find` names the model as MLflow stores it, so a name a database collation takes for a
    protected one (other accents, trailing spaces) is judged as that one; a prompt is not a
    model registry-bot governs."""
    if ask.kind == "webhook":
        return Verdict(True, "changing MLflow's webhooks") if any_protected(settings) else PASS
    found = find(ask.model) if find is not None and ask.model else None
    if found is not None and found.prompt and not _marks_prompt(ask):
        return PASS
    model = found.name if found is not None else ask.model
    if not any(protected(settings, n) for n in (model, ask.model, ask.new_name) if n):
        return PASS
    return _judge_protected(ask, model, settings, lookup)


def _judge_protected(ask: Ask, model: str, settings: Settings, lookup: Lookup) -> Verdict:
    alias = settings.production_alias.lower()
    if ask.kind == "stage":
        if ask.stage.strip().lower() == PRODUCTION:
            return _into_production(ask, model, settings, lookup)
        return _out_of_production(
            ask, model, settings, lookup, "moving version {} out of Production"
        )
    if ask.kind == "set_alias" and ask.alias.lower() == alias:
        return _into_production(ask, model, settings, lookup)
    if ask.kind == "delete_alias" and ask.alias.lower() == alias:
        return Verdict(True, f"deleting the {settings.production_alias} alias")
    if ask.kind == "delete_version":
        return _out_of_production(
            ask, model, settings, lookup, "deleting version {} (in Production)"
        )
    if ask.kind == "delete_model":
        return Verdict(True, "deleting the registered model")
    if ask.kind == "rename":
        return Verdict(True, "renaming the registered model")
    if ask.kind == "tags" and (record_keys(ask.tag_keys) or _marks_prompt(ask)):
        keys = ", ".join(record_keys(ask.tag_keys) or [PROMPT_TAG])
        return Verdict(True, f"writing registry-bot's record ({keys})")
    return PASS


def _marks_prompt(ask: Ask) -> bool:
    """Say whether the write sets or deletes the registered model's prompt tag: a protected
    model so marked would be taken for a prompt and left alone."""
    return ask.kind == "tags" and ask.model_tag and PROMPT_TAG in ask.tag_keys


def _into_production(ask: Ask, model: str, settings: Settings, lookup: Lookup) -> Verdict:
    """Refuse a move into Production; file it only for a version that exists and is not
    already Production, named as MLflow resolved it."""
    how = "setting the " + settings.production_alias + " alias" if ask.kind == "set_alias" else ""
    standing = lookup(model, ask.version)
    if standing is None:
        what = how or f"moving version {ask.version} into Production"
        return Verdict(True, what, why_not=f"{model} has no version {ask.version}")
    version = standing.version or ask.version
    if standing.in_production(settings.production_alias):
        what = how or f"moving version {version} into Production"
        return Verdict(True, what, why_not=f"version {version} is already in Production")
    what = how or f"moving version {version} into Production"
    if outcome := standing.decided():
        why = f"version {version} was decided already ({outcome}); to serve it again, ask an "
        return Verdict(True, what, why_not=why + "approver to roll back to it")
    return Verdict(True, what, version)


def any_protected(settings: Settings) -> bool:
    """Say whether the policy protects any model (every one, by default, with a policy file)."""
    policy = settings.policy
    return policy.protection("") != "off" or any(protected(settings, k) for k in policy.models)


def protected(settings: Settings, name: str) -> bool:
    """Say whether the model is protected; a name the policy protects in another case counts
    (a registry on a case-insensitive database would take one for the other)."""
    policy = settings.policy
    if policy.protection(name) != "off":
        return True
    folded = name.casefold()
    return any(policy.protection(k) != "off" for k in policy.models if k.casefold() == folded)


def _out_of_production(
    ask: Ask, model: str, settings: Settings, lookup: Lookup, what: str
) -> Verdict:
    """Refuse a write that takes the version out of Production, if it is in Production;
    `what` names the version ({}) as MLflow resolved it."""
    standing = lookup(model, ask.version)
    if standing is not None and standing.in_production(settings.production_alias):
        return Verdict(True, what.format(standing.version or ask.version))
    return PASS


def record_keys(keys: Iterable[str]) -> list[str]:
    """Return the keys among `keys` that are registry-bot's record."""
    return [k for k in keys if k.lower().startswith(RECORD_PREFIX)]


def where(settings: Settings | None, model: str) -> str:
    """Return ` (<channel>)` naming where the model's notices go as Slack shows it: `#name`
    for a channel name, else `channel C0123` for an ID (Slack shows no name for an ID
    outside Slack); '' if unknown."""
    if settings is None:
        return ""
    channel = channel_of(settings, model, settings.slack_channel).lstrip("#")
    if not channel:
        return ""
    return f" (channel {channel})" if _CHANNEL_ID.fullmatch(channel) else f" (#{channel})"


def refusal(settings: Settings, ask: Ask, verdict: Verdict, *, filed: bool | None) -> str:
    """Say why the request was refused: filed as a request (True), not filed (False), or
    refused outright (None)."""
    channel = where(settings, ask.model)
    if verdict.why_not:
        return NOT_ASKED.format(model=ask.model, what=verdict.what, why=verdict.why_not)
    if verdict.request and filed is not None:
        template = FILED if filed else NOT_FILED
        return template.format(model=ask.model, version=verdict.request, channel=channel)
    if ask.kind == "webhook":
        return WEBHOOKS.format(channel=channel)
    return REFUSED.format(model=ask.model, what=verdict.what, channel=channel)


def undecided(settings: Settings | None, model: str, why: str) -> str:
    """Say that the gate could not decide, so it refused (never fail open)."""
    return UNDECIDED.format(model=model or "This model", why=why, channel=where(settings, model))
