"""Slack's documented Block Kit and message limits, checked as Slack checks a payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Slack's documented limits (docs.slack.dev, Block Kit reference and chat.postMessage). The
# product keeps its own copy (registry.rules.text) on purpose: the double judges independently.
MESSAGE_BLOCKS = 50  # chat.postMessage, chat.update, chat.postEphemeral, response URLs
VIEW_BLOCKS = 100  # a modal or a Home tab
MESSAGE_TEXT = 40_000  # a message's top-level text: Slack answers msg_too_long above it
TEXT = 3_000  # any text object unless a tighter limit applies (a section's text, ...)
HEADER_TEXT = 150
FIELDS = 10
FIELD_TEXT = 2_000
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2_000
URL = 3_000
ID = 255  # block_id, action_id, callback_id, external_id
LABEL = 2_000  # an input block's label and hint
PLACEHOLDER = 150
INPUT_LENGTH = 3_000  # a plain_text_input's max_length
VIEW_TITLE = 24  # a modal's title, submit and close
PRIVATE_METADATA = 3_000

Problems = list[str]


def message_refusal(params: dict[str, Any]) -> tuple[str, Problems] | None:
    """Return Slack's error and the reasons for a message it would refuse, or None."""
    text = params.get("text")
    if isinstance(text, str) and len(text) > MESSAGE_TEXT:
        return "msg_too_long", [f"/text: {len(text)} characters, more than {MESSAGE_TEXT}"]
    blocks = params.get("blocks")
    if blocks is None:
        return None
    problems = block_problems(blocks, MESSAGE_BLOCKS)
    return ("invalid_blocks", problems) if problems else None


def view_problems(view: Any) -> Problems:
    """Return why Slack would refuse a modal or Home tab view (views.* answer invalid_arguments)."""
    if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
        return ["/view: a view is an object of type modal or home"]
    problems: Problems = []
    for key, limit in (
        ("private_metadata", PRIVATE_METADATA),
        ("callback_id", ID),
        ("external_id", ID),
    ):
        problems += _string(view, key, limit, "/view")
    for key in ("title", "submit", "close"):
        if view["type"] == "modal" and (key == "title" or key in view):
            problems += _text(view.get(key), VIEW_TITLE, f"/view/{key}", plain=True)
    return problems + block_problems(view.get("blocks", []), VIEW_BLOCKS, "/view/blocks")


def block_problems(blocks: Any, limit: int, at: str = "/blocks") -> Problems:
    """Return why Slack would refuse these blocks, at most `limit` of them."""
    if not isinstance(blocks, list):
        return [f"{at}: must be an array of blocks"]
    problems = [f"{at}: {len(blocks)} blocks, more than {limit}"] if len(blocks) > limit else []
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        problems += _block(block, f"{at}/{index}", block_ids)
    return problems


def _block(block: Any, at: str, block_ids: set[str]) -> Problems:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"{at}: a block is an object with a type"]
    problems = _string(block, "block_id", ID, at)
    block_id = block.get("block_id")
    if isinstance(block_id, str):
        if block_id in block_ids:
            problems.append(f"{at}/block_id: {block_id!r} is used twice")
        block_ids.add(block_id)
    check = _BLOCKS.get(block["type"])
    return problems + (check(block, at) if check else [])


def _section(block: dict, at: str) -> Problems:
    if "text" not in block and "fields" not in block:
        return [f"{at}: a section needs a text or fields"]
    problems = _text(block["text"], TEXT, f"{at}/text") if "text" in block else []
    if "fields" in block:
        problems += _list(block["fields"], FIELDS, f"{at}/fields")
        for index, field in enumerate(_items(block["fields"])):
            problems += _text(field, FIELD_TEXT, f"{at}/fields/{index}")
    if "accessory" in block:
        problems += _element(block["accessory"], f"{at}/accessory")
    return problems


def _header(block: dict, at: str) -> Problems:
    return _text(block.get("text"), HEADER_TEXT, f"{at}/text", plain=True)


def _context(block: dict, at: str) -> Problems:
    problems = _list(block.get("elements"), CONTEXT_ELEMENTS, f"{at}/elements")
    for index, element in enumerate(_items(block.get("elements"))):
        if isinstance(element, dict) and element.get("type") in ("plain_text", "mrkdwn"):
            problems += _text(element, TEXT, f"{at}/elements/{index}")
    return problems


def _actions(block: dict, at: str) -> Problems:
    problems = _list(block.get("elements"), ACTIONS_ELEMENTS, f"{at}/elements")
    action_ids: set[str] = set()
    for index, element in enumerate(_items(block.get("elements"))):
        where = f"{at}/elements/{index}"
        problems += _element(element, where)
        action_id = element.get("action_id") if isinstance(element, dict) else None
        if isinstance(action_id, str):
            if action_id in action_ids:
                problems.append(f"{where}/action_id: {action_id!r} is used twice in the block")
            action_ids.add(action_id)
    return problems


def _input(block: dict, at: str) -> Problems:
    problems = _text(block.get("label"), LABEL, f"{at}/label", plain=True)
    if "hint" in block:
        problems += _text(block["hint"], LABEL, f"{at}/hint", plain=True)
    return problems + _element(block.get("element"), f"{at}/element")


def _element(element: Any, at: str) -> Problems:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"{at}: an element is an object with a type"]
    problems = _string(element, "action_id", ID, at)
    if element["type"] == "button":
        problems += _text(element.get("text"), BUTTON_TEXT, f"{at}/text", plain=True)
        problems += _string(element, "value", BUTTON_VALUE, at)
        problems += _string(element, "url", URL, at)
    elif element["type"] == "plain_text_input":
        if "placeholder" in element:
            problems += _text(element["placeholder"], PLACEHOLDER, f"{at}/placeholder", plain=True)
        length = element.get("max_length", INPUT_LENGTH)
        if not isinstance(length, int) or not 1 <= length <= INPUT_LENGTH:
            problems.append(f"{at}/max_length: must be 1 to {INPUT_LENGTH}")
    return problems


def _text(obj: Any, limit: int, at: str, *, plain: bool = False) -> Problems:
    """Check a text object: its type, and 1 to `limit` characters of text."""
    kinds = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{at}: must be a text object of type {' or '.join(kinds)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{at}/text: must be a string of at least 1 character"]
    return [f"{at}/text: {len(text)} characters, more than {limit}"] if len(text) > limit else []


def _string(obj: dict, key: str, limit: int, at: str) -> Problems:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{at}/{key}: must be a string"]
    return [f"{at}/{key}: {len(value)} characters, more than {limit}"] if len(value) > limit else []


def _list(value: Any, limit: int, at: str) -> Problems:
    if not isinstance(value, list) or not value:
        return [f"{at}: must be a non-empty array"]
    return [f"{at}: {len(value)} items, more than {limit}"] if len(value) > limit else []


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_BLOCKS: dict[str, Callable[[dict, str], Problems]] = {
    "section": _section,
    "header": _header,
    "context": _context,
    "actions": _actions,
    "input": _input,
}
