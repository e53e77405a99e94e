"""Checks at start (SPEC 8): the bot token, each configured channel and user group, asked of Slack.

Each problem is one line. Only a token Slack refuses stops a service: then nothing it does
with Slack can work, and only new settings (so a restart) can mend it. Every other problem is
a warning and the service starts. A channel the bot is not in, or a user group that does not
exist, concerns only the models configured with it while the others work, and is mended in
Slack or in the policy file (inviting the bot needs no restart at all); stopping would halt
the work that can go on meanwhile. Slack not answering at start (down, rate limited, a
network fault) says nothing about the settings, and a service that needed Slack to start
would crash-loop through every Slack outage: a warning too, and nothing more is checked.

Slack is asked little: `auth.test` (the token), `conversations.info` per channel (it exists,
the bot is a member, it is not archived), `usergroups.users.list` per user group (it exists
and has members), with a short timeout and no retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse

from registry.adapters.slack import COMMAND_SCOPES, EVENT_SCOPES, WEB_API_SCOPES, web_client
from registry.rules.policy import ModelPolicy
from registry.rules.settings import Settings, SettingsError

log = logging.getLogger(__name__)

TIMEOUT = 5  # seconds for each call: a start waits at most this long for a silent Slack
# What auth.test answers for a token that can never work: revoked, wrong, of a deleted app.
REFUSED_TOKEN = (
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
)
BAD_TOKEN = "SLACK_BOT_TOKEN was refused by Slack ({error}): nothing could be posted"
UNANSWERED = "Slack did not answer at start ({why}): channels and user groups not checked"
NOT_IN = (
    "the bot is not in channel {channel} ({where}): posts there fail until someone invites it"
    " (/invite @registry-bot)"
)
ARCHIVED = "channel {channel} ({where}) is archived: posts there fail"
NO_CHANNEL = (
    "channel {channel} ({where}) was not found: it does not exist, or it is private and"
    " the bot is not in it (/invite @registry-bot)"
)
NO_GROUP = "user group {group} ({where}) does not exist: nobody can approve through it"
EMPTY_GROUP = "user group {group} ({where}) has no members: nobody can approve through it"
NO_SCOPE = (
    "{what} not checked: the bot token lacks the scope {scope} (reinstall the app from"
    " slack/manifest.yml)"
)
UNCHECKED = "{what} {id} ({where}) could not be checked: Slack answered {error}"


@dataclass(frozen=True)
class Finding:
    """One problem found at start, said in one line; `stops` when nothing could work."""

    text: str
    stops: bool = False


class SlackSilent(Exception):
    """Slack gave no answer (unreachable, 5xx, 429): nothing more is asked."""


# -- what to check (pure) ------------------------------------------------------------------


def channels_named(settings: Settings) -> dict[str, list[str]]:
    """Return each configured channel with where it is named: SLACK_CHANNEL, the policy."""
    named: dict[str, list[str]] = {}
    if settings.slack_channel:
        named.setdefault(settings.slack_channel, []).append("SLACK_CHANNEL")
    for where, model in _policies(settings):
        if model.channel:
            named.setdefault(model.channel, []).append(where)
    return named


def groups_named(settings: Settings) -> dict[str, list[str]]:
    """Return each configured user group with where it is named: APPROVER_GROUP, the policy."""
    named: dict[str, list[str]] = {}
    if settings.approver_group:
        named.setdefault(settings.approver_group, []).append("APPROVER_GROUP")
    for where, model in _policies(settings):
        for group in _groups_of(model):
            named.setdefault(group, []).append(where)
    return named


def _policies(settings: Settings) -> list[tuple[str, ModelPolicy]]:
    """Return the policy's defaults and each model's own policy, each only for what it adds
    to the defaults (a model's policy is already merged over them)."""
    policy = settings.policy
    base = policy.defaults
    found = [("policy defaults", base)]
    for name, model in sorted(policy.models.items()):
        own = ModelPolicy(
            channel="" if model.channel == base.channel else model.channel,
            approvers=None if model.approvers == base.approvers else model.approvers,
            approvals=() if model.approvals == base.approvals else model.approvals,
        )
        found.append((f"policy for model {name}", own))
    return found


def _groups_of(model: ModelPolicy) -> list[str]:
    groups = list(model.approvers.groups) if model.approvers else []
    groups += [slot.group for slot in model.approvals if slot.group]
    return list(dict.fromkeys(groups))


# -- what Slack's answers mean (pure) ------------------------------------------------------


def token_finding(error: str) -> Finding:
    """Return what auth.test refusing the token with `error` means."""
    if error in REFUSED_TOKEN:
        return Finding(BAD_TOKEN.format(error=error), stops=True)
    return Finding(UNANSWERED.format(why=f"auth.test answered {error}"))


def channel_finding(channel: str, where: str, info: dict[str, Any]) -> Finding | None:
    """Return what conversations.info's channel object says is wrong, if anything."""
    if info.get("is_archived"):
        return Finding(ARCHIVED.format(channel=channel, where=where))
    if info.get("is_member") is False:
        return Finding(NOT_IN.format(channel=channel, where=where))
    return None


def group_finding(group: str, where: str, members: list[str]) -> Finding | None:
    """Return what usergroups.users.list's members say is wrong, if anything."""
    return None if members else Finding(EMPTY_GROUP.format(group=group, where=where))


def refusal_finding(what: str, id_: str, where: str, error: str) -> Finding:
    """Return what Slack refusing to describe a channel or a user group means."""
    if what == "channel" and error == "channel_not_found":
        return Finding(NO_CHANNEL.format(channel=id_, where=where))
    if what == "user group" and error == "no_such_subteam":
        return Finding(NO_GROUP.format(group=id_, where=where))
    return Finding(UNCHECKED.format(what=what, id=id_, where=where, error=error))


# -- asking Slack ----------------------------------------------------------------------------


def check(settings: Settings, *, client: WebClient | None = None) -> bool:
    """Check the Slack setup; log each warning; raise SettingsError when nothing could work.

    Return whether Slack answered.
    """
    client = client or web_client(settings, timeout=TIMEOUT, retries=False)
    findings, answered = ask_slack(settings, client)
    for finding in findings:
        if finding.stops:
            raise SettingsError(finding.text)
        log.warning("start check: %s", finding.text)
    return answered


def ask_slack(settings: Settings, client: WebClient) -> tuple[list[Finding], bool]:
    """Ask Slack about the token, channels and groups; return the findings and whether
    Slack answered (it stops at the first call Slack does not answer)."""
    findings: list[Finding] = []
    try:
        _, refused = _ask(client.auth_test)
        if refused:
            return [token_finding(refused)], True
        findings += _each("channels", channels_named(settings), client, _channel)
        findings += _each("user groups", groups_named(settings), client, _group)
    except SlackSilent as exc:
        return [*findings, Finding(UNANSWERED.format(why=exc))], False
    return findings, True


Ask = Callable[[WebClient, str, str], Finding | None]
METHODS = {"channels": "conversations.info", "user groups": "usergroups.users.list"}


def _each(what: str, named: dict[str, list[str]], client: WebClient, ask: Ask) -> list[Finding]:
    """Ask about each channel (or group); a missing scope is said once, for all of them."""
    found: list[Finding] = []
    for id_, origins in named.items():
        try:
            finding = ask(client, id_, ", ".join(origins))
        except MissingScope as exc:
            scope = exc.scope or " or ".join(WEB_API_SCOPES[METHODS[what]])
            return [*found, Finding(NO_SCOPE.format(what=what, scope=scope))]
        if finding:
            found.append(finding)
    return found


def _channel(client: WebClient, channel: str, where: str) -> Finding | None:
    answer, refused = _ask(lambda: client.conversations_info(channel=channel))
    if refused:
        return refusal_finding("channel", channel, where, refused)
    return channel_finding(channel, where, answer.get("channel") or {})


def _group(client: WebClient, group: str, where: str) -> Finding | None:
    answer, refused = _ask(lambda: client.usergroups_users_list(usergroup=group))
    if refused:
        return refusal_finding("user group", group, where, refused)
    return group_finding(group, where, list(answer.get("users") or []))


class MissingScope(Exception):
    """The token lacks the scope a method needs (Slack names it)."""

    def __init__(self, scope: str):
        super().__init__(scope)
        self.scope = scope


def _ask(call: Callable[[], SlackResponse]) -> tuple[dict[str, Any], str]:
    """Make a Web API call; return its answer, or Slack's error code when it refused.

    Raise SlackSilent when Slack did not answer, MissingScope when the token lacks a scope.
    """
    try:
        data = call().data
        return (data if isinstance(data, dict) else {}), ""
    except SlackApiError as exc:
        status = exc.response.status_code
        if status == 429 or status >= 500:
            raise SlackSilent(f"HTTP {status}") from None
        error = str(exc.response.get("error", ""))
        if error == "missing_scope":
            raise MissingScope(str(exc.response.get("needed", ""))) from None
        return {}, error
    # Network errors and timeouts are OSErrors; a garbled body is a ValueError.
    except (SlackClientError, OSError, ValueError) as exc:
        raise SlackSilent(str(exc) or type(exc).__name__) from None


# -- what `registry-bot doctor` asks ----------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """Who the bot token is, and its scopes as Slack lists them; or why Slack refused it."""

    user: str = ""
    team: str = ""
    scopes: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Checked:
    """One channel or user group checked: whether it is as the settings need, and why not."""

    ok: bool
    text: str
    fix: str = ""


def needed_scopes() -> set[str]:
    """Return every bot scope the product uses: its Web API calls, events and command."""
    methods = {scope for scopes in WEB_API_SCOPES.values() for scope in scopes}
    events = {scope for scopes in EVENT_SCOPES.values() for scope in scopes}
    return methods | events | set(COMMAND_SCOPES)


def whose_token(client: WebClient) -> Token:
    """Ask auth.test who the token is; Slack names the token's scopes in a header."""
    try:
        answer = client.auth_test()
    except SlackApiError as exc:
        return Token(error=f"Slack refused the token ({exc.response.get('error', '')})")
    except (SlackClientError, OSError, ValueError) as exc:
        return Token(error=f"Slack did not answer ({exc or type(exc).__name__})")
    headers = {key.lower(): value for key, value in (answer.headers or {}).items()}
    listed = headers.get("x-oauth-scopes", "")
    scopes = listed if isinstance(listed, str) else ",".join(listed)
    granted = tuple(s.strip() for s in scopes.split(",") if s.strip())
    return Token(str(answer.get("user", "")), str(answer.get("team", "")), granted)


def each_checked(settings: Settings, client: WebClient) -> Iterator[tuple[str, Checked]]:
    """Check each configured channel and user group; one result for each."""
    asks: tuple[tuple[str, dict[str, list[str]], Ask, str], ...] = (
        ("channel", channels_named(settings), _channel, "the bot is in it"),
        ("user group", groups_named(settings), _group, "it has members"),
    )
    for what, named, ask, fine in asks:
        for id_, origins in named.items():
            where = ", ".join(origins)
            yield f"{what} {id_}", _checked(ask, client, id_, where, f"{where}: {fine}")


def _checked(ask: Ask, client: WebClient, id_: str, where: str, fine: str) -> Checked:
    try:
        finding = ask(client, id_, where)
    except MissingScope as exc:
        return Checked(False, f"not checked: the token lacks {exc.scope}", "add the scope")
    except SlackSilent as exc:
        return Checked(False, f"not checked: Slack did not answer ({exc})", "try again")
    return Checked(True, fine) if finding is None else Checked(False, finding.text)
