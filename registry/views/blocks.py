"""Block Kit's primitives every view is built from, each cut to Slack's limits. Pure."""

from __future__ import annotations

from registry.rules.text import (
    HEADER_TEXT,
    SECTION_TEXT,
    cut,
)


def section(text: str, *, link: str = "") -> dict:
    """Return a section block showing `text`, cut to fit (then `link` says where the rest is)."""
    return {"type": "section", "text": mrkdwn(cut(text, SECTION_TEXT, link=link))}


def context(text: str) -> dict:
    return {"type": "context", "elements": [mrkdwn(cut(text, SECTION_TEXT))]}


def mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def plain(text: str, limit: int) -> dict:
    return {"type": "plain_text", "text": cut(text, limit)}


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": cut(text, HEADER_TEXT)}}


def button(text: str, action_id: str, value: str, style: str = "") -> dict:
    """Return a button carrying `value`, which Slack sends back on a click; `style` is
    primary or danger (Slack refuses any other, so none is given when there is none)."""
    found = {"type": "button", "text": {"type": "plain_text", "text": text}}
    found.update(action_id=action_id, **({"style": style} if style else {}), value=value)
    return found
