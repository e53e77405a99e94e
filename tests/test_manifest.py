"""The Slack app manifests: exactly the bot scopes the Web API calls in the code need."""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

import pytest
import yaml
from slack_sdk import WebClient

from registry.adapters.slack import COMMAND_SCOPES, EVENT_SCOPES, WEB_API_SCOPES
from registry.rules.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("registry", "webhooks", "worker", "bot")
MANIFESTS = {
    "http": REPO / "slack" / "manifest.yml",
    "socket": REPO / "slack" / "manifest.socket.yml",
}
# Web API calls the libraries make for the product: Bolt asks auth.test who its token is,
# and the Socket Mode client asks apps.connections.open for its WebSocket URL.
LIBRARY_MODULES = (
    "slack_bolt.app.app",
    "slack_bolt.authorization.authorize",
    "slack_sdk.socket_mode.client",
)
EVENTS_URL = re.compile(r"^https://[^/\s]+/slack/events$")


@cache
def web_client_methods() -> dict[str, str]:
    """Map each WebClient method name (chat_postMessage) to its API method (chat.postMessage)."""
    found = {}
    for name, function in inspect.getmembers(WebClient, inspect.isfunction):
        match = re.search(r'api_call\(\s*"([A-Za-z.]+)"', inspect.getsource(function))
        if match and not name.startswith("_"):
            found[name] = match.group(1)
    return found


def api_calls_in(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Return the Web API methods that `sources` (where -> code) call, with where each is."""
    methods = web_client_methods()
    called: dict[str, set[str]] = {}
    for where, code in sources.items():
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                api = methods.get(node.func.attr)
                if api:
                    called.setdefault(api, set()).add(where)
    return called


def shipped_sources() -> dict[str, str]:
    """Return the code of every shipped module, by path."""
    return {
        str(path.relative_to(REPO)): path.read_text()
        for package in SHIPPED
        for path in sorted((REPO / package).rglob("*.py"))
    }


def library_sources() -> dict[str, str]:
    """Return the code of the library modules that call the Web API for the product."""
    return {name: inspect.getsource(importlib.import_module(name)) for name in LIBRARY_MODULES}


def events_registered(sources: Mapping[str, str]) -> set[str]:
    """Return the event types the bot registers listeners for (`app.event("...")`)."""
    found = set()
    for code in sources.values():
        for node in ast.walk(ast.parse(code)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "event"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(str(node.args[0].value))
    return found


def scope_problems(
    manifest: dict,
    called: Mapping[str, Iterable[str]],
    table: Mapping[str, tuple[str, ...]] = WEB_API_SCOPES,
    events: Mapping[str, tuple[str, ...]] = EVENT_SCOPES,
) -> list[str]:
    """Say every way the manifest's bot scopes differ from what the called methods need."""
    problems = [
        f"{method} is called ({', '.join(sorted(where))}) but WEB_API_SCOPES does not list it"
        for method, where in called.items()
        if method not in table
    ]
    problems += [f"WEB_API_SCOPES lists {m}, which nothing calls" for m in table if m not in called]
    needs: dict[str, set[str]] = {}
    for method in called:
        for scope in table.get(method, ()):
            needs.setdefault(scope, set()).add(method)
    subscribed = manifest["settings"]["event_subscriptions"]["bot_events"]
    for event in subscribed:
        for scope in events.get(event, ()):
            needs.setdefault(scope, set()).add(f"the {event} event")
    if manifest["features"].get("slash_commands"):
        for scope in COMMAND_SCOPES:
            needs.setdefault(scope, set()).add("the slash command")
    granted = set(manifest["oauth_config"]["scopes"]["bot"])
    problems += [
        f"{scope} is needed by {', '.join(sorted(needs[scope]))} but the manifest lacks it"
        for scope in sorted(set(needs) - granted)
    ]
    problems += [
        f"the manifest grants {s}, which nothing needs" for s in sorted(granted - set(needs))
    ]
    return problems


def load(kind: str) -> dict:
    return yaml.safe_load(MANIFESTS[kind].read_text())


def product_calls() -> dict[str, set[str]]:
    """Return the Web API methods the product calls, itself or through its libraries."""
    called = api_calls_in(shipped_sources())
    for method, where in api_calls_in(library_sources()).items():
        if method in ("auth.test", "apps.connections.open"):
            called.setdefault(method, set()).update(where)
    return called


# -- the manifests ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_the_manifest_grants_exactly_the_scopes_the_code_needs(kind):
    called = product_calls()
    assert {"chat.postMessage", "views.publish", "auth.test"} <= set(called)  # the scan works
    assert scope_problems(load(kind), called) == []


def test_the_scope_table_covers_the_calls_in_the_code_and_no_others():
    called = product_calls()
    assert set(called) == set(WEB_API_SCOPES), scope_problems(load("http"), called)


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_the_manifest_subscribes_to_the_events_the_bot_listens_for(kind):
    manifest = load(kind)
    listened = events_registered(
        {k: v for k, v in shipped_sources().items() if k.startswith("bot")}
    )
    assert listened == {"app_mention", "app_home_opened"} == set(EVENT_SCOPES)
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == listened
    features = manifest["features"]
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["bot_user"]["display_name"] == "registry-bot"
    [command] = features["slash_commands"]
    assert command["command"] == Settings(mlflow_tracking_uri="x").slack_command
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_the_http_manifest_points_every_request_at_slack_events():
    manifest = load("http")
    settings = manifest["settings"]
    urls = [
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
        *(c["url"] for c in manifest["features"]["slash_commands"]),
    ]
    assert all(EVENTS_URL.match(url) for url in urls), urls
    assert settings["socket_mode_enabled"] is False


def test_the_socket_mode_manifest_has_no_request_urls_and_the_same_app():
    socket, http = load("socket"), load("http")
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "url" not in MANIFESTS["socket"].read_text().replace("socket_mode", "")
    assert socket["oauth_config"] == http["oauth_config"]
    assert socket["display_information"] == http["display_information"]
    assert {k: v for k, v in socket["features"].items() if k != "slash_commands"} == {
        k: v for k, v in http["features"].items() if k != "slash_commands"
    }


# -- the check itself fails when it should ---------------------------------------------------


def test_a_scope_removed_from_the_manifest_is_caught():
    manifest = copy.deepcopy(load("http"))
    manifest["oauth_config"]["scopes"]["bot"].remove("usergroups:read")
    assert scope_problems(manifest, product_calls()) == [
        "usergroups:read is needed by usergroups.users.list but the manifest lacks it"
    ]


def test_a_new_call_without_its_scope_is_caught():
    new_code = {
        "registry/pins.py": "def pin(client):\n    client.pins_add(channel='C1', timestamp='1')\n"
    }
    called = {**product_calls(), **api_calls_in(new_code)}
    assert scope_problems(load("http"), called) == [
        "pins.add is called (registry/pins.py) but WEB_API_SCOPES does not list it"
    ]
    # Listed with its scope, the call is still refused until the manifest grants the scope.
    table = {**WEB_API_SCOPES, "pins.add": ("pins:write",)}
    assert scope_problems(load("http"), called, table) == [
        "pins:write is needed by pins.add but the manifest lacks it"
    ]


def test_an_unneeded_scope_or_unused_table_entry_is_caught():
    manifest = copy.deepcopy(load("socket"))
    manifest["oauth_config"]["scopes"]["bot"].append("reactions:write")
    called = {m: w for m, w in product_calls().items() if m != "views.publish"}
    assert scope_problems(manifest, called) == [
        "WEB_API_SCOPES lists views.publish, which nothing calls",
        "the manifest grants reactions:write, which nothing needs",
    ]
