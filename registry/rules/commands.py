"""The chat command grammar: text in, a command or a usage error out. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.rules.events import MODEL_NAME
from registry.rules.text import escape

HISTORY_DEFAULT = 10
HISTORY_MAX = 100
_MENTION = re.compile(r"^(<@[A-Z0-9]+(\|[^>]*)?>\s*)+")
_DIGITS = re.compile(r"[0-9]{1,10}")

USAGE = {
    "help": "help",
    "status": "status <model>",
    "history": f"history <model> [n, default {HISTORY_DEFAULT}]",
    "promote": "promote <model> <version>",
    "rollback": "rollback <model> [<version>] [<reason…>]",
}
APPROVER_VERBS = ("promote", "rollback")
VERB_WORDS = {
    "rollback": "roll back"
}  # a command said as a verb: "may roll back", never "rollback"


@dataclass(frozen=True)
class Command:
    """A parsed command; unused fields stay empty."""

    verb: str
    model: str = ""
    version: str = ""
    count: int = HISTORY_DEFAULT
    reason: str = ""

    def task_kwargs(self) -> dict[str, str | int]:
        """Return the command as the primitives the command task takes."""
        return {
            "verb": self.verb,
            "model_name": self.model,
            "version": self.version,
            "count": self.count,
            "reason": self.reason,
        }


class CommandError(ValueError):
    """The text is not a command; the message is one usage line."""


def parse_command(text: str, *, command: str = "/registry") -> Command:
    """Parse `status churn`, `rollback churn 3 bad drift`, … (a leading @mention is dropped)."""
    tokens = _MENTION.sub("", (text or "").strip()).split()
    if not tokens:
        raise CommandError(usage_line(command))
    verb, args = tokens[0].lower(), tokens[1:]
    if verb not in USAGE:
        raise CommandError(f"Unknown command {escape(repr(verb[:40]))}. {usage_line(command)}")
    if verb == "help":
        return Command("help")
    model = _model(verb, args, command)
    if verb == "status":
        _no_more(verb, args[1:], command)
        return Command("status", model)
    if verb == "history":
        return Command("history", model, count=_count(args[1:], command))
    if verb == "promote":
        if len(args) != 2 or not _DIGITS.fullmatch(args[1]) or int(args[1]) == 0:
            raise CommandError(f"Usage: {command} {USAGE['promote']} (the version is a number)")
        return Command("promote", model, version=str(int(args[1])))
    rest = args[1:]
    version = str(int(rest[0])) if rest and _DIGITS.fullmatch(rest[0]) and int(rest[0]) else ""
    reason = " ".join(rest[1:] if version else rest)
    return Command("rollback", model, version=version, reason=reason[:500])


def usage_line(command: str = "/registry") -> str:
    """Return the one-line summary of every command."""
    return "Usage: " + " | ".join(f"{command} {u}" for u in USAGE.values())


def help_text(command: str = "/registry") -> str:
    """Return the help reply, one command a line."""
    lines = [f"`{command} {usage}`" for usage in USAGE.values()]
    lines.append("status, history and help answer anyone; promote and rollback need an approver.")
    return "\n".join(lines)


def _model(verb: str, args: list[str], command: str) -> str:
    if not args:
        raise CommandError(f"Usage: {command} {USAGE[verb]} (which model?)")
    if not MODEL_NAME.fullmatch(args[0]):
        raise CommandError(
            f"{escape(repr(args[0][:60]))} is not a model name. Usage: {command} {USAGE[verb]}"
        )
    return args[0]


def _count(args: list[str], command: str) -> int:
    if not args:
        return HISTORY_DEFAULT
    if len(args) > 1 or not _DIGITS.fullmatch(args[0]) or not 1 <= int(args[0]) <= HISTORY_MAX:
        raise CommandError(
            f"Usage: {command} {USAGE['history']} (n is a number from 1 to {HISTORY_MAX})"
        )
    return int(args[0])


def _no_more(verb: str, extra: list[str], command: str) -> None:
    if extra:
        raise CommandError(f"Usage: {command} {USAGE[verb]}")
