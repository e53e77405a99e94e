"""What a candidate's evidence says against Production (SPEC 15): its model signature's
columns, its requirements, which of its run's pictures to show, and the metric trend. Pure.

MLflow writes a model's signature into its `MLmodel` file as JSON strings (one per
inputs and outputs); a pipeline's `requirements.txt` is pip's own format. Both are read
here from their text, so the rules need neither MLflow nor pip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import yaml

MAX_IMAGES = 4  # SPEC 15: at most four of a run's pictures in the thread
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # a larger picture is named, not uploaded
MAX_TEXT_BYTES = 256 * 1024  # an MLmodel or requirements.txt larger than this is not read
MAX_COLUMNS = 2000  # a signature listing more inputs (or outputs) is not compared
MAX_TYPE_CHARS = 200  # a column's name or type is cut to this many characters
TREND_VERSIONS = 10  # the chart's versions: the model's last ten
TREND_METRICS = 3  # ungated models: their first three metrics
DEFAULT_IMAGES = ("*.png",)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_KINDS = {"png": "image/png", "jpeg": "image/jpeg"}
# A requirement line: a name (PEP 508), optional extras, then whatever pins it.
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)")


class Unreadable(ValueError):
    """An artifact is there but cannot be read as what it should be; says why in a line."""


@dataclass(frozen=True)
class Signature:
    """A model signature's columns: (name, type) in order, inputs and outputs."""

    inputs: tuple[tuple[str, str], ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SchemaDiff:
    """How a candidate's signature differs from Production's."""

    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()  # name, Production's type, the candidate's
    outputs_changed: tuple[str, ...] = ()  # "before → after" lines

    @property
    def breaking(self) -> bool:
        """Say whether a serving side that sends what it always sent would break."""
        return bool(self.removed or self.retyped)

    @property
    def unchanged(self) -> bool:
        """Say whether the signatures are the same."""
        return not (self.added or self.removed or self.retyped or self.outputs_changed)


@dataclass(frozen=True)
class RequirementsDiff:
    """How a candidate's requirements.txt differs from Production's, by package."""

    added: tuple[tuple[str, str], ...] = ()  # name, its pin ("" for none)
    removed: tuple[tuple[str, str], ...] = ()
    repinned: tuple[tuple[str, str, str], ...] = ()  # name, Production's pin, the candidate's

    @property
    def unchanged(self) -> bool:
        """Say whether both list the same packages with the same pins."""
        return not (self.added or self.removed or self.repinned)


@dataclass(frozen=True)
class Artifact:
    """A file a run logged: its path in the run and its size (-1 when MLflow does not say)."""

    path: str
    size: int = -1


@dataclass(frozen=True)
class TrendPoint:
    """One version on the trend chart: its metrics, and whether it is Production."""

    version: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    production: bool = False


class _NoAliases(yaml.SafeLoader):
    """YAML as MLflow writes MLmodel: never an alias, so an alias bomb (a few hundred bytes
    that expand to gigabytes) is refused before anything expands."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise Unreadable("MLmodel uses YAML aliases, which MLflow never writes")
        return super().compose_node(parent, index)


def parse_signature(mlmodel: str) -> Signature | None:
    """Return the signature in an MLmodel file's text, or None when it has none.

    Raise Unreadable for text that is not an MLmodel file or a signature MLflow would
    not have written.
    """
    try:
        doc = yaml.load(mlmodel, Loader=_NoAliases)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise Unreadable(f"MLmodel is not YAML ({_first_line(exc)})") from None
    except RecursionError:
        raise Unreadable("MLmodel is nested too deeply") from None
    if not isinstance(doc, dict):
        raise Unreadable("MLmodel is not a mapping")
    sig = doc.get("signature")
    if sig is None:
        return None
    if not isinstance(sig, dict):
        raise Unreadable("the signature in MLmodel is not a mapping")
    return Signature(_columns(sig.get("inputs"), "inputs"), _columns(sig.get("outputs"), "outputs"))


def _columns(value: object, which: str) -> tuple[tuple[str, str], ...]:
    """Read a signature's `inputs` or `outputs`: a JSON list of column or tensor specs, in
    a string as MLflow writes it (never YAML's own lists), at most MAX_COLUMNS."""
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        raise Unreadable(f"the signature's {which} are not a JSON string, as MLflow writes them")
    try:
        specs = json.loads(value)
    except (ValueError, RecursionError):
        raise Unreadable(f"the signature's {which} are not JSON") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise Unreadable(f"the signature's {which} are not a list of columns")
    if len(specs) > MAX_COLUMNS:
        raise Unreadable(f"the signature's {which} list {len(specs)}, over {MAX_COLUMNS} columns")
    return tuple(
        (_cut(str(s.get("name") or f"#{i}")), _cut(_type_of(s))) for i, s in enumerate(specs)
    )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TYPE_CHARS else text[: MAX_TYPE_CHARS - 1] + "…"


def _type_of(spec: Mapping[str, object]) -> str:
    """Name a column's type as MLflow writes it; a tensor by its dtype and shape."""
    kind = str(spec.get("type", "?"))
    tensor = spec.get("tensor-spec")
    if kind == "tensor" and isinstance(tensor, dict):
        shape = tensor.get("shape")
        dims = "×".join("-1" if d is None else str(d) for d in shape or []) if shape else ""
        return f"tensor {tensor.get('dtype', '?')}" + (f" [{dims}]" if dims else "")
    if kind in ("array", "object", "map") or spec.get("items") or spec.get("properties"):
        detail = {k: v for k, v in spec.items() if k not in ("name", "required")}
        return json.dumps(detail, sort_keys=True, separators=(",", ":"))
    return kind if spec.get("required", True) else f"{kind} (optional)"


def diff_schema(candidate: Signature, production: Signature) -> SchemaDiff:
    """Compare the candidate's signature with Production's, column by column."""
    cand, prod = dict(candidate.inputs), dict(production.inputs)
    added = tuple((n, t) for n, t in candidate.inputs if n not in prod)
    removed = tuple((n, t) for n, t in production.inputs if n not in cand)
    retyped = tuple((n, prod[n], t) for n, t in candidate.inputs if n in prod and prod[n] != t)
    outputs: tuple[str, ...] = ()
    if candidate.outputs != production.outputs:
        outputs = (f"{_shape(production.outputs)} → {_shape(candidate.outputs)}",)
    return SchemaDiff(added, removed, retyped, outputs)


def _shape(columns: Sequence[tuple[str, str]]) -> str:
    if not columns:
        return "none"
    return ", ".join(t if n.startswith("#") else f"{n} ({t})" for n, t in columns)


def parse_requirements(text: str) -> dict[str, str]:
    """Return the packages a requirements.txt lists, by normalised name, with their pins.

    Comments, blank lines and pip options (`-r`, `--index-url`) are left out; a line that
    names no package (a URL, a path) is kept whole under its own text.
    """
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _REQUIREMENT.fullmatch(line)
        if match is None or "://" in line or line.startswith((".", "/")):
            found[line] = ""
            continue
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        found[name] = "".join(match.group(3).split())  # ">= 2" is ">=2"
    return found


def diff_requirements(
    candidate: Mapping[str, str], production: Mapping[str, str]
) -> RequirementsDiff:
    """Compare two requirements lists (from `parse_requirements`) package by package."""
    added = tuple((n, p) for n, p in candidate.items() if n not in production)
    removed = tuple((n, p) for n, p in production.items() if n not in candidate)
    repinned = tuple(
        (n, production[n], p)
        for n, p in candidate.items()
        if n in production and production[n] != p
    )
    return RequirementsDiff(added, removed, repinned)


def pick_images(
    artifacts: Iterable[Artifact], patterns: Sequence[str], limit: int = MAX_IMAGES
) -> tuple[list[Artifact], list[Artifact]]:
    """Return the run's artifacts the policy's globs name, as (shown, left out): sorted by
    path, at most `limit` shown. A pattern without a slash matches a file's name in any
    folder; one with a slash matches its whole path."""
    matched = sorted(
        {a.path: a for a in artifacts if _matches(a.path, patterns)}.values(), key=lambda a: a.path
    )
    return matched[:limit], matched[limit:]


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatchcase(path if "/" in p else name, p) for p in patterns)


def image_kind(head: bytes) -> str:
    """Name a picture's format from its first bytes: "png", "jpeg", or "" for neither."""
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    return ""


def trend_metrics(gated: Sequence[str], points: Sequence[TrendPoint]) -> list[str]:
    """Return the metrics the trend chart draws: the gated ones, else the first three the
    versions report (by name), in that order."""
    if gated:
        return list(dict.fromkeys(gated))
    names = sorted({name for point in points for name in point.metrics})
    return names[:TREND_METRICS]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
