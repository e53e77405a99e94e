"""Figures, targets and the results files: JSON, a markdown table and a latency plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    """One reported figure, with its target and verdict when it has one."""

    section: str
    name: str
    value: float | str | bool
    unit: str = ""
    target: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        """Return pass, MISS, or info for a figure without a target."""
        return "info" if self.ok is None else ("pass" if self.ok else "MISS")


def pct(values: list[float], q: float) -> float:
    """Return the q-th percentile (linear interpolation), or NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def md_row(*cells: object) -> str:
    """Return one markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def ms(values: list[float], q: float) -> float:
    """Return the q-th percentile of seconds, in milliseconds."""
    return round(pct(values, q) * 1000, 1)


def ratio(a: float, b: float) -> float:
    """Return a/b rounded, or NaN when b is zero."""
    return round(a / b, 2) if b else float("nan")


def at_most(section: str, name: str, value: float, limit: float, unit: str = "×") -> Figure:
    """Return a figure that passes when value <= limit."""
    return Figure(section, name, value, unit, f"≤ {limit:g}{_unit(unit)}", bool(value <= limit))


def at_least(section: str, name: str, value: float, limit: float, unit: str = "×") -> Figure:
    """Return a figure that passes when value >= limit."""
    return Figure(section, name, value, unit, f"≥ {limit:g}{_unit(unit)}", bool(value >= limit))


def below(section: str, name: str, value: float, limit: float, unit: str) -> Figure:
    """Return a figure that passes when value < limit."""
    return Figure(section, name, value, unit, f"< {limit:g}{_unit(unit)}", bool(value < limit))


def markdown(day: str, figures: list[Figure], notes: list[str], profiles: list[str]) -> str:
    """Render the results page: the table, how it was measured, and profiles of misses."""
    lines = [f"# registry-bot bench, {day}", "", table(figures)]
    met, missed = sum(f.ok is True for f in figures), sum(f.ok is False for f in figures)
    lines += ["", f"{len(figures)} figures; {met} targets met, {missed} missed."]
    if notes:
        lines += ["", "## How it was measured", "", *[f"- {n}" for n in notes]]
    if profiles:
        lines += ["", "## Where the time goes (missed targets)", "", *profiles]
    return "\n".join(lines) + "\n"


def table(figures: list[Figure]) -> str:
    """Return just the markdown table, for the terminal."""
    rows = [md_row("section", "figure", "value", "target", "result"), md_row(*["---"] * 5)]
    for f in figures:
        rows.append(
            md_row(f.section, f.name, _fmt(f.value) + _unit(f.unit), f.target or "—", f.verdict)
        )
    return "\n".join(rows)


def _fmt(value: float | str | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _unit(unit: str) -> str:
    return unit if unit in ("×", "%", "") else f" {unit}"


def write(
    day: str, suffix: str, data: dict, figures: list[Figure], notes: list[str], profiles: list[str]
) -> list[Path]:
    """Write the JSON and markdown results; return their paths."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{day}{suffix}"
    payload = {
        **data,
        "figures": [asdict(f) | {"verdict": f.verdict} for f in figures],
        "notes": notes,
    }
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    md_path.write_text(markdown(day, figures, notes, profiles))
    return [json_path, md_path]


def _jsonable(value: object) -> object:
    return float(value) if isinstance(value, np.floating) else str(value)


def plot(
    day: str, suffix: str, pipeline: dict[str, list[float]], doors: dict[str, list[float]]
) -> Path:
    """Plot latency distributions (ECDFs): the pipeline beside the front doors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    _ecdf(left, pipeline, "Per event: floor (plain MlflowClient) vs end to end")
    right.axvline(90, color="grey", linestyle="--", linewidth=1, label="Slack ack target (90 ms)")
    _ecdf(right, doors, "Front doors: HTTP answer time")
    fig.tight_layout()
    path = RESULTS / f"{day}{suffix}-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ecdf(ax: Axes, series: dict[str, list[float]], title: str) -> None:
    """Draw one empirical distribution per series, in ms on a log axis."""
    for label, seconds in series.items():
        if seconds:
            xs = np.sort(np.asarray(seconds) * 1000)
            ys = np.arange(1, len(xs) + 1) / len(xs)
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
