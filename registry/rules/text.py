"""How outside text and people are written into Slack mrkdwn (escaped, mentioned, dated),
and Slack's limits on what registry-bot sends, with cutting texts and values to fit. Pure."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

# A Slack user ID: U or W, then upper-case letters and digits ("U" alone, "Uab" are not).
MENTIONABLE = re.compile(r"[UW][A-Z0-9]+")


def escape(text: object) -> str:
    """Return text from a person or a pipeline made inert for Slack mrkdwn.

    Slack reads &, < and > as control characters (`<!channel>`, `<@U…>`, `<url|label>`);
    every posting path puts outside text through here, and only here.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user: str) -> str:
    """Render a Slack user ID as a mention; leave e-mail addresses as they are."""
    return f"<@{user}>" if MENTIONABLE.fullmatch(user) else escape(user)


def mentions(users: str | Sequence[str]) -> str:
    """Render users (a list, or the comma-separated form the record keeps) as mentions."""
    names = users.split(",") if isinstance(users, str) else users
    return ", ".join(mention(u) for u in names if u)


def format_time(at: float) -> str:
    """Format a Unix time for people, in UTC, 24-hour: `2026-12-07 14:09 UTC`."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_span(start: float, end: float) -> str:
    """Say when something lasted, with the date and UTC said once: `on 2026-12-07 from 14:09
    to 15:30 UTC`, or `from 2026-12-06 22:00 to 2026-12-07 06:00 UTC`."""
    first, last = (datetime.fromtimestamp(t, UTC) for t in (start, end))
    if f"{first:%Y-%m-%d %H:%M}" == f"{last:%Y-%m-%d %H:%M}":
        return f"on {first:%Y-%m-%d} at {first:%H:%M} UTC, for under a minute"
    if first.date() == last.date():
        return f"on {first:%Y-%m-%d} from {first:%H:%M} to {last:%H:%M} UTC"
    return f"from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"


def plural(count: int, word: str) -> str:
    """Say `count` of a thing in proper English: `1 approval`, `2 approvals`, never `(s)`."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_number(number: float, *, signed: bool = False) -> str:
    """Show a metric, a change or a gate's bound the one way people read numbers everywhere
    (tables, status, Home, gate verdicts): at most four significant digits, no trailing
    zeros, no exponent (`0.854`, `+0.0172`, `46`, `12346`), except below 0.0001, where
    four decimals would hide it (`1.234e-05`)."""
    if not math.isfinite(number):
        return str(number)
    if number == 0:
        return "0"
    plus = "+" if signed and number > 0 else ""
    magnitude = math.floor(math.log10(abs(number)))
    if magnitude < -4:
        mantissa, _, exponent = f"{number:.3e}".partition("e")
        return f"{plus}{mantissa.rstrip('0').rstrip('.')}e{exponent}"
    text = f"{number:.{max(0, 3 - magnitude)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return plus + text


ALL_IN_MLFLOW = "all of them in MLflow"


def mlflow_link(url: str, label: str = ALL_IN_MLFLOW) -> str:
    """Return an mrkdwn link to an MLflow page where what was cut can be read, or ''."""
    return link(url, label) if url else ""


def link(url: str, text: str) -> str:
    # A `|` or `>` inside the URL (a model name can hold them) would end the link early.
    target = escape(url).replace("|", "%7C")
    return f"<{target}|{escape(text)}>" if url else escape(text)


# Slack's documented limits (Block Kit reference, chat.postMessage, views.open).
VIEW_BLOCKS = 100
MESSAGE_TEXT = 40_000  # a message's top-level text: Slack answers msg_too_long above it
SECTION_TEXT = 3_000  # also any other text object (a context element's, ...)
HEADER_TEXT = 150
FIELD_TEXT = 2_000
BUTTON_VALUE = 2_000
PRIVATE_METADATA = 3_000
INPUT_LABEL = 2_000
MODAL_TITLE = 24  # also a modal's submit and close

CUT = "…"
MORE = "… and {count} more"
READ_ON = " ({link})"  # after a cut: where the rest can be read
# The longest entity escape writes ("&amp;"), which a cut must not split.
ENTITY = 5


def cut(text: str, limit: int, *, link: str = "") -> str:
    """Return `text` whole if it fits in `limit` characters, else cut and marked "…".

    `text` is escaped mrkdwn (or plain text): the cut never splits an entity (`&amp;`) or a
    link or mention (`<…>`). `link`, an mrkdwn link to where the rest can be read, follows
    the mark when there is room for it.
    """
    if len(text) <= limit:
        return text
    tail = CUT + READ_ON.format(link=link) if link else CUT
    if len(tail) >= limit:
        tail = CUT
    end = _safe_end(text, limit - len(tail))
    return text[:end].rstrip() + tail


def fit_lines(lines: Sequence[str], limit: int, *, keep: int = 1, link: str = "") -> str:
    """Join `lines` if they fit in `limit` characters; else show the first that fit and end
    with "… and N more" and `link` (left out only if even the first lines leave no room).
    The first `keep` lines (a heading) are always shown, cut if they must be."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    kept = min(keep, len(lines))
    ends = _line_ends(lines)
    for read_on in (link, "") if link else ("",):
        for shown in range(len(lines) - 1, kept - 1, -1):
            more = more_line(len(lines) - shown, read_on)
            if ends[shown] + len(more) + (1 if shown else 0) <= limit:
                return "\n".join([*lines[:shown], more])
    more = more_line(len(lines) - kept)
    return cut("\n".join(lines[:kept]), max(limit - len(more) - 1, 1)) + "\n" + more


def more_line(count: int, link: str = "") -> str:
    """Say how many more items there are (and where to read them, given a link)."""
    return MORE.format(count=count) + (READ_ON.format(link=link) if link else "")


def fit_json(
    data: Mapping[str, object], limit: int, *, shorten: str = "", drop: Sequence[str] = ()
) -> str:
    """Return `data` as compact JSON within `limit` characters (a button value, a modal's
    private_metadata): the field `shorten` is cut first, then the fields in `drop` left out.

    Raise ValueError if it still does not fit: what is left is what the value is for.
    """
    fields = dict(data)
    value = _dumps(fields)
    if len(value) > limit and isinstance(fields.get(shorten), str):
        fields[shorten] = _shortest_cut(fields, shorten, limit)
        value = _dumps(fields)
    for key in drop:
        if len(value) <= limit:
            break
        fields.pop(key, None)
        value = _dumps(fields)
    if len(value) > limit:
        raise ValueError(f"{len(value)} characters of JSON do not fit in {limit}")
    return value


def _shortest_cut(fields: dict[str, object], key: str, limit: int) -> str:
    """Return fields[key] cut (marked "…") to the longest prefix whose JSON fits `limit`."""
    text = str(fields[key])
    low, high = 0, len(text)  # JSON escapes make the length grow unevenly: search for it
    while low < high:
        middle = (low + high + 1) // 2
        if len(_dumps({**fields, key: text[:middle] + CUT})) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + CUT


def _safe_end(text: str, end: int) -> int:
    """Return the largest position up to `end` that splits no entity and no `<…>`."""
    end = max(end, 0)
    amp = text.rfind("&", max(0, end - ENTITY + 1), end)
    if amp != -1 and ";" not in text[amp:end]:
        end = amp
    opened = text.rfind("<", 0, end)
    if opened != -1 and ">" not in text[opened:end]:
        end = opened
    return end


def _line_ends(lines: Sequence[str]) -> list[int]:
    """Return, for each n, the length of the first n lines joined by newlines."""
    ends = [0]
    for line in lines:
        ends.append(ends[-1] + len(line) + (1 if len(ends) > 1 else 0))
    return ends


def _dumps(fields: Mapping[str, object]) -> str:
    # ASCII only: each character is then one character for Slack too, whatever it counts in.
    return json.dumps(fields, separators=(",", ":"))
