"""Promotion policy (SPEC section 7): parse the policy file and evaluate gates, with no I/O."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NoReturn

import yaml
from cronsim import CronSim, CronSimError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from registry.rules.evidence import DEFAULT_IMAGES
from registry.rules.text import format_number

Direction = Literal["higher", "lower"]

# Exact boundaries must pass despite float noise (0.9 - 0.85 is 0.050000000000000044).
EPSILON = 1e-12

TOP_KEYS = ("defaults", "models")
MODEL_KEYS = (
    "gates",
    "approval_expires_after",
    "remind_every",
    "canary",
    "channel",
    "approvers",
    "approvals",
    "protect_production",
    "freeze",
    "guard",
    "evidence",
)
GATE_KEYS = ("metric", "min", "max", "no_worse_than_production", "direction")
CANARY_KEYS = ("duration", "require_report")
APPROVERS_KEYS = ("users", "groups")
SLOT_KEYS = ("group", "users", "count")
FREEZE_KEYS = ("schedule", "duration", "timezone", "reason")
PROTECT_ACTIONS = ("alert", "revert", "off")
MAX_SLOT_COUNT = 20
GUARD_KEYS = ("window", "action")
EVIDENCE_KEYS = ("images", "chart")
MAX_IMAGE_PATTERNS = 10
GuardAction = Literal["propose", "rollback"]
GUARD_ACTIONS: tuple[GuardAction, ...] = ("propose", "rollback")
GUARD_WINDOW = 24 * 3600.0  # SPEC 12: a day after a promotion, an alert is about it
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower")
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*")
# PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as a string, not a float.
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_NULL_TAG = "tag:yaml.org,2002:null"
_CHANNEL = re.compile(r"[CG][A-Z0-9]{2,}")
_USER = re.compile(r"[UW][A-Z0-9]{2,}")
_GROUP = re.compile(r"S[A-Z0-9]{2,}")
# An IANA key: letters, digits and -_+ in slash-separated parts, no `..` (zoneinfo reads files).
_ZONE = re.compile(r"(?!.*\.\.)[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_MERGE_TAG = "tag:yaml.org,2002:merge"

EMPTY_FILE = "policy file is empty"
NOT_UTF8 = "policy file is not UTF-8 text"
TOO_DEEP = "policy file is nested too deeply"
BAD_DURATION = "expected a duration like 30s, 15m, 72h or 7d (or a number of seconds), got {value}"
NOT_POSITIVE = "must be positive, got {value}"
NEEDS_DIRECTION = (
    "gate {metric!r} has min and max, so no_worse_than_production needs direction: higher or lower"
)
CONTRADICTS = (
    "direction {direction!r} contradicts {bound} (min means higher is better, max lower is better)"
)
UNKNOWN_KEY = "unknown key {key!r} in {where}; allowed: {allowed}"
NO_MERGE = "merge keys (<<) are not supported; a model's unset keys already come from defaults"
MISSING_METRIC = "{metric}: missing from the run"
NOT_FINITE_METRIC = "{metric}: {value!r} is not a finite number"
NO_PRODUCTION = "no Production to compare"
BAD_CHANNEL = "channel must be a Slack channel ID like C0123ABCD, got {value}"
BAD_USER = "{key} must list Slack user IDs like U0123ABCD, got {value}"
BAD_GROUP = "{key} must be a Slack user group ID like S0123ABCD, got {value}"
SLOT_NEEDS_MEMBERS = "an approvals slot needs a group or users (who may fill it)"
BAD_PROTECT = "protect_production must be one of alert, revert, off, got {value}"
BAD_CRON = "freeze schedule {value} is not a cron expression ({problem})"
BAD_ZONE = "freeze timezone {value} is not an IANA time zone (like Europe/Berlin)"
FREEZE_NEEDS = "a freeze needs a schedule (cron) and a duration"
PASS_MARK = "✅"
FAIL_MARK = "❌"
# Inside the notice's monospace table: marks every monospace font has, unlike emoji.
NOTE_PASS = "✓"
NOTE_FAIL = "✗"


class PolicyError(ValueError):
    """The policy file is malformed; the message is one line, `<source>:<line>: <problem>`."""

    def __init__(self, source: str, line: int, problem: str):
        super().__init__(f"{source}:{line}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


class _Problem(Exception):
    """A problem at a line, before the source is known."""

    def __init__(self, line: int, text: str):
        super().__init__(text)
        self.line = line
        self.text = " ".join(text.split())


@dataclass(frozen=True)
class Gate:
    """One metric check a candidate must pass before Staging."""

    metric: str
    min: float | None = None
    max: float | None = None
    no_worse_than_production: float | None = None
    direction: Direction | None = None

    @property
    def higher_is_better(self) -> bool:
        """Return whether a larger value of the metric is better."""
        if self.direction is not None:
            return self.direction == "higher"
        # Direction follows the bound: max-bounded metrics (latency, loss) are lower-is-better.
        return not (self.max is not None and self.min is None)


@dataclass(frozen=True)
class Canary:
    """Hold an approved version in Staging for `duration` seconds before Production."""

    duration: float
    require_report: bool = False


@dataclass(frozen=True)
class Approvers:
    """Who may approve, reject, promote and roll back a model: users and user groups."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Slot:
    """One approvals slot: `count` distinct approvers from its group or its users."""

    count: int = 1
    group: str = ""
    users: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Return what names this slot in the durable record."""
        return f"{self.group}|{','.join(self.users)}"


@dataclass(frozen=True)
class Freeze:
    """A change freeze: windows starting on a cron schedule, lasting `duration` seconds."""

    schedule: str
    duration: float
    timezone: str = "UTC"
    reason: str = ""


@dataclass(frozen=True)
class Guard:
    """After a promotion: how long an alert concerns it, and whether to propose or roll back."""

    window: float = GUARD_WINDOW
    action: GuardAction = "propose"


@dataclass(frozen=True)
class Evidence:
    """What the notice's thread shows besides the schema and dependency changes (SPEC 15):
    the run's pictures the globs name, and the metric trend chart."""

    images: tuple[str, ...] = DEFAULT_IMAGES
    chart: bool = True


@dataclass(frozen=True)
class ModelPolicy:
    """The policy that applies to one registered model."""

    gates: tuple[Gate, ...] = ()
    approval_expires_after: float | None = None
    remind_every: float | None = None
    canary: Canary | None = None
    channel: str = ""  # "" is SLACK_CHANNEL
    approvers: Approvers | None = None  # None is APPROVERS / APPROVER_GROUP
    approvals: tuple[Slot, ...] = ()  # () is REQUIRED_APPROVALS of the approvers
    protect_production: str | None = None  # None is the default (alert with a policy file)
    freeze: tuple[Freeze, ...] = ()
    guard: Guard = Guard()
    evidence: Evidence | None = Evidence()  # None: no evidence in the thread


@dataclass(frozen=True)
class Policy:
    """Defaults plus per-model policies, each already merged over the defaults."""

    defaults: ModelPolicy = field(default_factory=ModelPolicy)
    models: dict[str, ModelPolicy] = field(default_factory=dict)
    # A policy read from a file protects Production by default (SPEC 11); none does not.
    from_file: bool = field(default=False, compare=False)

    @classmethod
    def empty(cls) -> Policy:
        """Return the policy used without a POLICY_FILE: no gates, expiry, reminders or canary."""
        return cls()

    def for_model(self, name: str) -> ModelPolicy:
        """Return the policy for the model `name`."""
        return self.models.get(name, self.defaults)

    def protection(self, name: str) -> str:
        """Return the model's protect_production action: alert, revert or off."""
        chosen = self.for_model(name).protect_production
        return chosen or ("alert" if self.from_file else "off")


@dataclass(frozen=True)
class GateVerdict:
    """The outcome of one gate for one candidate."""

    gate: Gate
    passed: bool
    value: float | None
    production_value: float | None
    message: str

    @property
    def detail(self) -> str:
        """Return the message without its `<metric> <value>` start: `≥ 0.9`, `missing …`."""
        shown = "" if self.value is None else f" {_fmt(self.value)}"
        rest = self.message.removeprefix(f"{self.gate.metric}{shown}")
        return rest.removeprefix(":").strip()


def parse_duration(value: object) -> float:
    """Return the seconds in `30s`, `15m`, `72h`, `7d` or a plain positive number of seconds."""
    if isinstance(value, bool):
        raise ValueError(BAD_DURATION.format(value=repr(value)))
    if isinstance(value, int | float):
        seconds = _to_float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match[1]) * DURATION_UNITS.get(match[2], 1.0)
    else:
        raise ValueError(BAD_DURATION.format(value=_shorten(repr(value))))
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(NOT_POSITIVE.format(value=_shorten(repr(value))))
    return seconds


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and parse the policy file at `path`; a missing file raises OSError."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise PolicyError(os.fspath(path), line, NOT_UTF8) from None
    return parse_policy(text, source=os.fspath(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse policy YAML, naming `source` and the line of the offending node in any error."""
    try:
        return _policy(_compose(text))
    except _Problem as problem:
        raise PolicyError(source, problem.line, problem.text) from None
    except RecursionError:
        raise PolicyError(source, 1, TOO_DEEP) from None


# --- parsing: walk the composed node tree so every problem has a line ---


def _compose(text: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        context = f"{error.context}, " if error.context else ""
        raise _Problem(_line(mark), f"invalid YAML: {context}{error.problem}") from None
    except yaml.reader.ReaderError as error:
        line = len(_LINE_BREAK.findall(text, 0, error.position)) + 1
        problem = f"invalid YAML: character #x{error.character:04x} is not allowed"
        raise _Problem(line, problem) from None
    except yaml.YAMLError as error:
        raise _Problem(1, f"invalid YAML: {error}") from None


def _policy(root: Node | None) -> Policy:
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        raise _Problem(1, EMPTY_FILE)
    top = _mapping(root, "the policy file", TOP_KEYS)
    defaults = ModelPolicy()
    if "defaults" in top:
        defaults = _model_policy(top["defaults"], defaults, "defaults")
    models = _models(top["models"], defaults) if "models" in top else {}
    return Policy(defaults=defaults, models=models, from_file=True)


def _models(node: Node, defaults: ModelPolicy) -> dict[str, ModelPolicy]:
    entries = _mapping(node, "models", None)
    for name, value in entries.items():
        if not name.strip():
            _fail(value, "a model name must not be empty")
    return {
        name: _model_policy(value, defaults, f"model {name!r}") for name, value in entries.items()
    }


def _model_policy(node: Node, base: ModelPolicy, where: str) -> ModelPolicy:
    fields = _mapping(node, where, MODEL_KEYS)
    changes: dict[str, Any] = {}
    if "gates" in fields:
        changes["gates"] = _gates(fields["gates"])
    for key in ("approval_expires_after", "remind_every"):
        if key in fields:
            changes[key] = _optional_duration(fields[key], key)
    if "canary" in fields:
        changes["canary"] = _canary(fields["canary"])
    changes.update(_governance(fields))
    if "guard" in fields:
        changes["guard"] = _guard(fields["guard"])
    if "evidence" in fields:
        changes["evidence"] = _evidence(fields["evidence"])
    # A model's entry replaces each key it sets; the rest come from the defaults.
    return replace(base, **changes)


def _gates(node: Node) -> tuple[Gate, ...]:
    if not isinstance(node, SequenceNode):
        _fail(node, f"gates must be a list (use [] for none), got {_describe(node)}")
    return tuple(_gate(item) for item in node.value)


def _gate(node: Node) -> Gate:
    fields = _mapping(node, "a gate", GATE_KEYS)
    if "metric" not in fields:
        _fail(node, "a gate needs a 'metric'")
    metric = _metric(fields["metric"])
    low, high, tolerance = (
        _number(fields[key], key) if key in fields else None
        for key in ("min", "max", "no_worse_than_production")
    )
    if low is None and high is None and tolerance is None:
        _fail(node, f"gate {metric!r} needs min, max or no_worse_than_production")
    if low is not None and high is not None and low > high:
        _fail(node, f"gate {metric!r} has min {low:g} above max {high:g}")  # as written
    if tolerance is not None and tolerance < 0:
        _fail(fields["no_worse_than_production"], "no_worse_than_production must not be negative")
    gate = Gate(metric, low, high, tolerance)
    return _with_direction(gate, node, fields.get("direction"))


def _with_direction(gate: Gate, node: Node, direction_node: Node | None) -> Gate:
    ambiguous = gate.min is not None and gate.max is not None
    if direction_node is None:
        if ambiguous and gate.no_worse_than_production is not None:
            _fail(node, NEEDS_DIRECTION.format(metric=gate.metric))
        return gate
    direction = _scalar(direction_node, "direction", "'higher' or 'lower'")
    if direction not in DIRECTIONS:
        _fail(
            direction_node,
            f"direction must be {' or '.join(map(repr, DIRECTIONS))}, "
            f"got {_describe(direction_node)}",
        )
    if gate.no_worse_than_production is None:
        _fail(direction_node, "direction only applies with no_worse_than_production")
    if not ambiguous and (gate.min is not None or gate.max is not None):
        bound = "min" if gate.min is not None else "max"
        if gate.higher_is_better != (direction == "higher"):
            _fail(direction_node, CONTRADICTS.format(direction=direction, bound=bound))
    return replace(gate, direction=direction)


def _canary(node: Node) -> Canary | None:
    if _is_null(node):
        return None
    fields = _mapping(node, "canary", CANARY_KEYS)
    if "duration" not in fields:
        _fail(node, "canary needs a duration")
    duration = _duration(fields["duration"], "canary.duration")
    report = fields.get("require_report")
    require_report = report is not None and _flag(report, "canary.require_report")
    return Canary(duration=duration, require_report=require_report)


def _governance(fields: dict[str, Node]) -> dict[str, Any]:
    """Parse the routing and governance keys that are set; null restores each default."""
    parsers = {
        "channel": lambda n: "" if _is_null(n) else _channel(n),
        "approvers": lambda n: None if _is_null(n) else _approvers(n),
        "approvals": lambda n: () if _is_null(n) else _slots(n),
        "protect_production": lambda n: "off" if _is_null(n) else _protect(n),
        "freeze": lambda n: () if _is_null(n) else _freezes(n),
    }
    return {key: parse(fields[key]) for key, parse in parsers.items() if key in fields}


def _channel(node: Node) -> str:
    value = _scalar(node, "channel", "a channel ID")
    if not isinstance(value, str) or not _CHANNEL.fullmatch(value):
        _fail(node, BAD_CHANNEL.format(value=_describe(node)))
    return value


def _approvers(node: Node) -> Approvers:
    fields = _mapping(node, "approvers", APPROVERS_KEYS)
    users = _ids(fields["users"], "approvers.users", _USER) if "users" in fields else ()
    groups = _ids(fields["groups"], "approvers.groups", _GROUP) if "groups" in fields else ()
    return Approvers(users=users, groups=groups)


def _ids(node: Node, key: str, pattern: re.Pattern) -> tuple[str, ...]:
    template = BAD_GROUP if pattern is _GROUP else BAD_USER
    if not isinstance(node, SequenceNode):
        _fail(node, f"{key} must be a list, got {_describe(node)}")
    found: list[str] = []
    for item in node.value:
        value = _scalar(item, key, "an ID")
        if not isinstance(value, str) or not pattern.fullmatch(value):
            _fail(item, template.format(key=key, value=_describe(item)))
        found.append(value)
    return tuple(dict.fromkeys(found))


def _slots(node: Node) -> tuple[Slot, ...]:
    if not isinstance(node, SequenceNode):
        _fail(
            node,
            f"approvals must be a list of slots (use null for the default), got {_describe(node)}",
        )
    return tuple(_slot(item) for item in node.value)


def _slot(node: Node) -> Slot:
    fields = _mapping(node, "an approvals slot", SLOT_KEYS)
    group = ""
    if "group" in fields:
        group = _scalar(fields["group"], "group", "a user group ID")
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            _fail(fields["group"], BAD_GROUP.format(key="group", value=_describe(fields["group"])))
    users = _ids(fields["users"], "users", _USER) if "users" in fields else ()
    if not group and not users:
        _fail(node, SLOT_NEEDS_MEMBERS)
    count = _count(fields["count"]) if "count" in fields else 1
    if users and not group and count > len(users):
        _fail(fields["count"], f"count {count} is more than the {len(users)} users listed")
    return Slot(count=count, group=group, users=users)


def _count(node: Node) -> int:
    value = _scalar(node, "count", "a whole number")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOT_COUNT:
        _fail(
            node, f"count must be a whole number from 1 to {MAX_SLOT_COUNT}, got {_describe(node)}"
        )
    return value


def _protect(node: Node) -> str:
    _scalar(node, "protect_production", "alert, revert or off")
    # The raw text: YAML 1.1 would read a bare `off` as false.
    value = str(node.value).strip()
    if value not in PROTECT_ACTIONS:
        _fail(node, BAD_PROTECT.format(value=_describe(node)))
    return value


def _freezes(node: Node) -> tuple[Freeze, ...]:
    if not isinstance(node, SequenceNode):
        _fail(node, f"freeze must be a list of windows, got {_describe(node)}")
    return tuple(_freeze(item) for item in node.value)


def _freeze(node: Node) -> Freeze:
    fields = _mapping(node, "a freeze", FREEZE_KEYS)
    if "schedule" not in fields or "duration" not in fields:
        _fail(node, FREEZE_NEEDS)
    zone = _zone(fields["timezone"]) if "timezone" in fields else "UTC"
    schedule = _cron(fields["schedule"], zone)
    duration = _duration(fields["duration"], "freeze.duration")
    reason = _text(fields["reason"], "freeze.reason") if "reason" in fields else ""
    return Freeze(schedule=schedule, duration=duration, timezone=zone, reason=reason)


def _zone(node: Node) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = _scalar(node, "timezone", "an IANA time zone")
    if not isinstance(value, str) or not _ZONE.fullmatch(value):
        _fail(node, BAD_ZONE.format(value=_describe(node)))
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        _fail(node, BAD_ZONE.format(value=_describe(node)))
    return value


def _cron(node: Node, zone: str) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    value = _scalar(node, "schedule", "a cron expression")
    if not isinstance(value, str):
        _fail(node, BAD_CRON.format(value=_describe(node), problem="not text"))
    try:
        # Constructing it parses it; the first start proves the schedule ever fires.
        next(CronSim(value, datetime.now(ZoneInfo(zone))))
    except (CronSimError, StopIteration, ValueError, OverflowError) as error:
        _fail(node, BAD_CRON.format(value=_describe(node), problem=error or "never starts"))
    return " ".join(value.split())


def _text(node: Node, key: str) -> str:
    value = _scalar(node, key, "text")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        _fail(node, f"{key} must be text, got {_describe(node)}")
    return str(node.value).strip()[:200]


def _guard(node: Node) -> Guard:
    fields = _mapping(node, "guard", GUARD_KEYS)
    guard = Guard()
    if "window" in fields:
        guard = replace(guard, window=_duration(fields["window"], "guard.window"))
    if "action" in fields:
        action = _scalar(fields["action"], "guard.action", "propose or rollback")
        if action not in GUARD_ACTIONS:
            _fail(
                fields["action"],
                f"guard.action must be propose or rollback, got {_describe(fields['action'])}",
            )
        guard = replace(guard, action=action)
    return guard


def _evidence(node: Node) -> Evidence | None:
    if _is_null(node):
        return None
    fields = _mapping(node, "evidence", EVIDENCE_KEYS)
    evidence = Evidence()
    if "images" in fields:
        evidence = replace(evidence, images=_patterns(fields["images"]))
    if "chart" in fields:
        evidence = replace(evidence, chart=_flag(fields["chart"], "evidence.chart"))
    return evidence


def _patterns(node: Node) -> tuple[str, ...]:
    if not isinstance(node, SequenceNode):
        _fail(node, f"evidence.images must be a list of glob patterns, got {_describe(node)}")
    if len(node.value) > MAX_IMAGE_PATTERNS:
        _fail(node, f"evidence.images takes at most {MAX_IMAGE_PATTERNS} patterns")
    patterns = []
    for item in node.value:
        value = _scalar(item, "evidence.images", "a glob pattern like '*.png'")
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            _fail(
                item, f"evidence.images must list glob patterns like '*.png', got {_describe(item)}"
            )
        patterns.append(value.strip())
    return tuple(patterns)


def _mapping(node: Node, where: str, allowed: Sequence[str] | None) -> dict[str, Node]:
    if not isinstance(node, MappingNode):
        _fail(node, f"{where} must be a mapping, got {_describe(node)}")
    fields: dict[str, Node] = {}
    for key_node, value_node in node.value:
        key = _key(key_node, where)
        if allowed is not None and key not in allowed:
            _fail(key_node, UNKNOWN_KEY.format(key=key, where=where, allowed=", ".join(allowed)))
        if key in fields:
            _fail(key_node, f"duplicate key {key!r} in {where}")
        fields[key] = value_node
    return fields


def _key(node: Node, where: str) -> str:
    if node.tag == _MERGE_TAG:
        _fail(node, NO_MERGE)
    if not isinstance(node, ScalarNode):
        _fail(node, f"keys in {where} must be plain names, got {_describe(node)}")
    # The raw text, so a model named `yes` or `123` stays that name.
    return str(node.value)


def _metric(node: Node) -> str:
    metric = _scalar(node, "metric", "a metric name")
    if not isinstance(metric, str) or not metric.strip():
        _fail(node, f"metric must be a metric name, got {_describe(node)}")
    return metric.strip()


def _number(node: Node, key: str) -> float:
    value = _scalar(node, key, "a number")
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(node, f"{key} must be a number, got {_describe(node)}")
    number = _to_float(value)
    if not math.isfinite(number):
        _fail(node, f"{key} must be a finite number, got {_describe(node)}")
    return number


def _flag(node: Node, key: str) -> bool:
    value = _scalar(node, key, "true or false")
    if not isinstance(value, bool):
        _fail(node, f"{key} must be true or false, got {_describe(node)}")
    return value


def _optional_duration(node: Node, key: str) -> float | None:
    # An explicit null turns the feature off, e.g. a model without the default reminders.
    return None if _is_null(node) else _duration(node, key)


def _duration(node: Node, key: str) -> float:
    value = _scalar(node, key, "a duration like 30s, 15m, 72h or 7d")
    try:
        return parse_duration(value)
    except ValueError as error:
        raise _Problem(_line(node.start_mark), f"{key}: {error}") from None


def _scalar(node: Node, key: str, expected: str) -> Any:
    if not isinstance(node, ScalarNode):
        _fail(node, f"{key} must be {expected}, got {_describe(node)}")
    try:
        return SafeConstructor().construct_object(node, deep=True)
    # Explicit tags (`!!int x`, `!!timestamp x`) make PyYAML's constructors raise all sorts.
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError):
        _fail(node, f"{key} must be {expected}, got {_describe(node)}")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "null" if node.tag == _NULL_TAG else _shorten(repr(node.value))


def _fail(node: Node, text: str) -> NoReturn:
    raise _Problem(_line(node.start_mark), text)


def _line(mark: yaml.Mark | None) -> int:
    return mark.line + 1 if mark is not None else 1


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _to_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return math.inf


# --- evaluation ---


def evaluate(
    gates: Iterable[Gate],
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None = None,
) -> list[GateVerdict]:
    """Return one verdict per gate for `candidate`'s metrics against Production's."""
    return [_verdict(gate, candidate, production or {}) for gate in gates]


def verdict_line(verdict: GateVerdict) -> str:
    """Return a short line for Slack, such as `✅ accuracy 0.93 ≥ 0.9`."""
    return f"{PASS_MARK if verdict.passed else FAIL_MARK} {verdict.message}"


def better_direction(gates: Iterable[Gate], metric: str) -> Direction | None:
    """Return which way `metric` is better by its gates, or None when they do not say.

    A `min` means higher is better, a `max` lower, an explicit `direction` wins, and a
    gate with only `no_worse_than_production` is higher-is-better; a min-and-max band
    without a direction, gates that disagree, or no gate at all say nothing.
    """
    found = {_direction(gate) for gate in gates if gate.metric == metric}
    return found.pop() if len(found) == 1 else None


def gate_rule(gate: Gate) -> str:
    """Describe what a gate asks, such as `≥ 0.9` or `≤ Production + 5`."""
    parts = []
    if gate.min is not None:
        parts.append(f"≥ {_fmt(gate.min)}")
    if gate.max is not None:
        parts.append(f"≤ {_fmt(gate.max)}")
    tolerance = gate.no_worse_than_production
    if tolerance is not None:
        sign, op = ("−", "≥") if gate.higher_is_better else ("+", "≤")
        slack = f" {sign} {_fmt(tolerance)}" if tolerance else ""
        parts.append(f"{op} Production{slack}")
    return ", ".join(parts)


def verdict_note(verdict: GateVerdict) -> str:
    """Return a gate's verdict to show beside its metric: `✓ ≥ 0.9`, `✗ < min 0.9 (…)`."""
    if not verdict.passed:
        return f"{NOTE_FAIL} {verdict.detail}"
    note = f"{NOTE_PASS} {gate_rule(verdict.gate)}"
    if verdict.gate.no_worse_than_production is not None and verdict.production_value is None:
        note += f" ({NO_PRODUCTION})"
    return note


def _direction(gate: Gate) -> Direction | None:
    if gate.direction is not None:
        return gate.direction
    if gate.min is not None and gate.max is not None:
        return None  # a band: neither way is better
    return "higher" if gate.higher_is_better else "lower"


def _verdict(
    gate: Gate, candidate: Mapping[str, float], production: Mapping[str, float]
) -> GateVerdict:
    value = _finite(candidate.get(gate.metric))
    production_value = _finite(production.get(gate.metric))
    if value is None:
        raw = candidate.get(gate.metric)
        template = MISSING_METRIC if raw is None else NOT_FINITE_METRIC
        message = template.format(metric=gate.metric, value=raw)
        return GateVerdict(gate, False, None, production_value, message)
    checks = [*_bound_checks(gate, value), *_production_checks(gate, value, production_value)]
    failures = [text for passed, text in checks if not passed]
    parts = failures or [text for _, text in checks]
    if gate.no_worse_than_production is not None and production_value is None:
        parts.append(NO_PRODUCTION)
    separator = " " if checks else ": "  # "f1 0.8: no Production to compare"
    message = f"{gate.metric} {_fmt(value)}{separator}" + "; ".join(parts)
    return GateVerdict(gate, not failures, value, production_value, message)


def _bound_checks(gate: Gate, value: float) -> list[tuple[bool, str]]:
    checks = []
    if gate.min is not None:
        short = gate.min - value
        passed = short <= EPSILON
        failed = f"< min {_fmt(gate.min)} (short by {_fmt(short)})"
        text = f"≥ {_fmt(gate.min)}" if passed else failed
        checks.append((passed, text))
    if gate.max is not None:
        over = value - gate.max
        passed = over <= EPSILON
        failed = f"> max {_fmt(gate.max)} (over by {_fmt(over)})"
        text = f"≤ {_fmt(gate.max)}" if passed else failed
        checks.append((passed, text))
    return checks


def _production_checks(
    gate: Gate, value: float, production: float | None
) -> list[tuple[bool, str]]:
    tolerance = gate.no_worse_than_production
    if tolerance is None or production is None:
        return []
    worse_by = production - value if gate.higher_is_better else value - production
    text = f"vs Production {_fmt(production)}: "
    if worse_by > EPSILON:
        text += f"worse by {_fmt(worse_by)} (tolerance {_fmt(tolerance)})"
    elif worse_by < -EPSILON:
        text += f"better by {_fmt(-worse_by)}"
    else:
        text += "the same"
    return [(worse_by <= tolerance + EPSILON, text)]


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = _to_float(value)
    return number if math.isfinite(number) else None


def _fmt(number: float) -> str:
    # One format for every number people read (registry.rules.text.format_number); four
    # decimals also hide float noise such as 0.05000000000000004.
    return format_number(number)
