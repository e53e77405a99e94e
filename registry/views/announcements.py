"""What the channel and a notice's thread are told of a rollback or a canary. Pure."""

from __future__ import annotations

from registry.rules.text import escape, format_time, mention

NO_REASON = "No reason was given."


def rollback_announcement(model: str, current: str, target: str, user: str, reason: str) -> str:
    """Tell the channel that `user` rolled `model` back from v`current` to v`target`, and why
    if they said (Confirm asks them, so the channel also hears when they did not)."""
    why = f" Reason: {escape(reason)}" if reason else f" {NO_REASON}"
    return (
        f"{mention(user)} rolled {escape(model)} back from v{current} to v{target}"
        f" (v{current} archived).{why}"
    )


def rollback_abandoned(model: str, target: str, user: str, serving: str) -> str:
    """Tell the channel that a confirmed rollback was dropped because Production changed."""
    return (
        f"The rollback of {escape(model)} to v{target} that {mention(user)} confirmed was not"
        f" carried out: Production changed to v{serving} meanwhile. Nothing was rolled back."
    )


def canary_overdue_note(model: str, version: str, ended: float, expires: float) -> str:
    """Say, once in the thread, that a canary window ended without its passing report."""
    then = (
        f"it expires at {format_time(expires)} unless a passing report comes first"
        if expires
        else "it waits for a passing report (no approval_expires_after is set)"
    )
    return (
        f"{escape(model)} v{version}: the canary window ended at {format_time(ended)} without a "
        f"passing canary report, so it stays in Staging; {then}."
    )
