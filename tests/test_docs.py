"""The documentation holds to the code: the site builds strictly, the README stays short, and
the settings, metrics and routes the reference pages list are the ones the code has."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from registry.rules.settings import Settings, parse_settings
from tests.support import REPO, metric_families

DOCS = REPO / "docs"
# The packages the wheel and the image ship, as pyproject.toml lists them.
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED = [
    name
    for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    if "." not in name
]
README_LINES = 200  # two screens


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """Return the text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    following = re.search(rf"\n#{{1,{len(level)}}} ", text[start:])
    return text[start : start + following.start()] if following else text[start:]


def first_cells(text: str) -> list[str]:
    """Return the first cell of every table row in `text` (header and rule rows left out)."""
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [row.split("|")[1].strip() for row in rows]


# --- the site and the README ---


def test_the_site_builds_strictly_with_every_page_in_the_nav(tmp_path):
    # mkdocs.yml turns pages left out of the nav, broken links and anchors into warnings,
    # and --strict makes every warning an error.
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # mkdocs' banner about its successor
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    assert (site / "index.html").is_file()


def test_the_readme_fits_on_two_screens_and_names_the_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_LINES
    assert "make test" in readme and "make demo" in readme


def test_the_readme_links_only_files_that_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links into the docs"
    assert [t for t in local if not (REPO / t).exists()] == []


# --- settings: the table and what the code reads ---


class RecordingEnv(dict):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def environ_reads(source: str) -> Iterator[str]:
    """Yield the names `source` reads from the process environment: `os.environ.get("X")`,
    `os.environ["X"]`, `os.getenv("X")`, and `.get("X")` on a name bound to it (`env`)."""
    for node in ast.walk(ast.parse(source)):
        name = _called_for(node) or _subscripted_for(node)
        if name:
            yield name


def _called_for(node: ast.AST) -> str:
    if not (isinstance(node, ast.Call) and node.args and _is_name(node.args[0])):
        return ""
    func = node.func
    getter = isinstance(func, ast.Attribute) and (
        func.attr == "getenv" or (func.attr == "get" and _is_environ(func.value))
    )
    return node.args[0].value if getter else ""  # type: ignore[attr-defined]


def _subscripted_for(node: ast.AST) -> str:
    read = isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
    if read and _is_environ(node.value) and _is_name(node.slice):  # type: ignore[attr-defined]
        return node.slice.value  # type: ignore[attr-defined]
    return ""


def _is_name(node: ast.AST) -> bool:
    """Say whether `node` is a string that looks like an environment variable's name."""
    return isinstance(node, ast.Constant) and bool(
        re.fullmatch(r"[A-Z][A-Z0-9_]+", str(node.value))
    )


def _is_environ(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in ("env", "environ")


def settings_the_code_reads() -> set[str]:
    env = RecordingEnv()
    parse_settings(env)
    names = set(env.asked)
    for package in SHIPPED:
        for path in sorted((REPO / package).rglob("*.py")):
            names.update(environ_reads(path.read_text(encoding="utf-8")))
    return names


def documented_settings() -> list[str]:
    table = section(page("reference/settings.md"), "## Every setting")
    return [name for cell in first_cells(table) for name in re.findall(r"`([A-Z0-9_]+)`", cell)]


def test_the_settings_table_names_every_setting_the_code_reads_and_no_other():
    documented = documented_settings()
    assert len(documented) == len(set(documented)), "a setting has two rows"
    read = settings_the_code_reads()
    assert sorted(read - set(documented)) == [], "read by the code, missing from the table"
    assert sorted(set(documented) - read) == [], "in the table, read by no code"


def test_the_settings_check_sees_every_way_of_reading_the_environment():
    source = (
        "import os\n"
        "a = os.environ.get('ONE', '')\n"
        "b = os.environ['TWO']\n"
        "c = os.getenv('THREE')\n"
        "env = os.environ\n"
        "d = env.get('FOUR')\n"
        "os.environ['WRITTEN'] = 'x'\n"
        "e = {}.get('lower_case')\n"
    )
    assert sorted(environ_reads(source)) == ["FOUR", "ONE", "THREE", "TWO"]


def test_a_settings_row_says_its_default():
    table = section(page("reference/settings.md"), "## Every setting")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert all(len([c for c in row.split("|")[1:-1] if c.strip()]) == 3 for row in rows)


# --- metrics: the list and what the services register ---


def metrics_the_code_registers() -> set[str]:
    return {f.name for f in metric_families()}


def test_the_metrics_page_names_every_metric_and_no_other():
    table = section(page("reference/metrics.md"), "## Every metric")
    documented = [cell.strip("`") for cell in first_cells(table)]
    assert len(documented) == len(set(documented))
    assert sorted(set(documented) ^ metrics_the_code_registers()) == []


def test_the_metrics_check_builds_every_metric_the_source_names():
    # A metric defined somewhere the check above does not build would escape it: every
    # "registry_bot_…" string in a module that uses prometheus_client must be one it built.
    named = set()
    for package in SHIPPED:
        for path in (REPO / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            if "prometheus_client" in source:
                named.update(re.findall(r"\"(registry_bot_\w+)\"", source))
    assert named == metrics_the_code_registers()


# --- HTTP routes: the tables and the apps' url_map ---


def routes(app: Flask) -> set[str]:
    return {
        f"{method} {rule.rule}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def webhooks_app() -> Flask:
    from webhooks.app import create_app

    return create_app(Settings(mlflow_tracking_uri="http://x", redis_url="redis://x:1/0"))


def bot_app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    import bot.web

    # The Bolt app checks the Slack setup at start; the routes do not depend on it.
    monkeypatch.setattr(bot.web, "start_app", lambda settings, socket_mode: None)
    monkeypatch.setattr(bot.web, "SlackRequestHandler", lambda app: None)
    return bot.web.create_wsgi_app(
        Settings(mlflow_tracking_uri="http://x", redis_url="redis://x:1/0")
    )


def prediction_app() -> Flask:
    from registry.serving.api import create_app

    return create_app(None)  # type: ignore[arg-type]  # routes are read, never called


@pytest.mark.parametrize("heading", ["## webhooks", "## bot", "## prediction API"])
def test_the_http_page_lists_every_route_and_no_other(heading, monkeypatch):
    app = {
        "## webhooks": webhooks_app,
        "## bot": lambda: bot_app(monkeypatch),
        "## prediction API": prediction_app,
    }[heading]()
    table = section(page("reference/http-api.md"), heading)
    documented = [cell.strip("`") for cell in first_cells(table)]
    assert len(documented) == len(set(documented))
    assert sorted(set(documented) ^ routes(app)) == []


# --- the chat commands and the policy file's keys ---


def test_the_slack_page_lists_every_chat_command():
    from registry.rules.commands import USAGE

    table = section(page("reference/slack.md"), "## Chat commands")
    documented = [cell.strip("`").split()[0] for cell in first_cells(table)]
    assert sorted(documented) == sorted(USAGE)


def test_the_policy_page_names_every_key_the_policy_file_takes():
    from registry.rules import policy

    text = page("reference/policy.md")
    keys = {
        key
        for group in (
            policy.TOP_KEYS,
            policy.MODEL_KEYS,
            policy.GATE_KEYS,
            policy.CANARY_KEYS,
            policy.APPROVERS_KEYS,
            policy.SLOT_KEYS,
            policy.FREEZE_KEYS,
            policy.GUARD_KEYS,
            policy.EVIDENCE_KEYS,
        )
        for key in group
    }
    # Named as `key`, or written as a key in an example ({key: …}, key: …).
    missing = [k for k in sorted(keys) if not re.search(rf"[`{{ ]{k}[`:]", text)]
    assert missing == []


def test_every_page_on_disk_is_markdown_or_a_picture():
    # mkdocs warns of pages left out of the nav only for .md files: nothing else hides there.
    others = [p for p in DOCS.rglob("*") if p.is_file() and p.suffix not in (".md", ".png")]
    assert others == [], [str(Path(p).relative_to(REPO)) for p in others]
