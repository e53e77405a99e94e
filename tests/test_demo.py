"""`make demo` end to end: the whole loop driven through the sandbox in headless Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from mlflow import MlflowClient
from playwright.sync_api import expect, sync_playwright

from bot.listeners.decisions import EMPTY_REASON
from devkit.demo import MODEL, PORTS, DemoConfig, demo_env
from devkit.sandbox.app import NOT_A_COMMAND, REQUIRED_FIELD, STALE_MESSAGE
from devkit.stack import (
    alive,
    descendants,
    free_port,
    port_in_use,
    start_redis,
    stop,
    wait_until,
)
from registry.rules.text import format_number
from tests.support import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# Debian's Chromium, headless, with nothing that reaches out to the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
UI_TIMEOUT_MS = 20_000  # a click goes bot -> Redis -> worker -> MLflow -> Slack -> page
# The README's screenshot; `UPDATE_SCREENSHOT=1 make test` rewrites it, others use tmp.
SCREENSHOT = REPO / "docs" / "sandbox.png"
HEADER = "registry-bot sandbox — #models"  # by name, as Slack shows a channel
ADA, OLAF, RITA = "UADA", "UOLAF", "URITA"
# The README's /predict example: a customer who churns, and one who does not.
KEPT_KEY = "not-the-demos"  # in the user's Redis, which the demo must leave alone
README_ROWS = {"inputs": [[0.1, 2.1, -0.5, -3.8, 1.1, -2.9, 2.6, -2.5], [0, 0, 0, 0, 0, 0, 0, 0]]}


@dataclass
class RunningDemo:
    """`python -m devkit.demo` running as a subprocess, its output collected."""

    proc: subprocess.Popen
    ports: dict[str, int]
    root: Path
    lines: list[str] = field(default_factory=list)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def output(self) -> str:
        return "".join(self.lines)

    def collect(self) -> None:
        """Read the demo's output until it closes (run in a thread)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, word: str, timeout: float) -> None:
        """Wait for an output line containing `word`; fail with the output if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(word in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"demo exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.2)
        pytest.fail(f"no {word!r} line within {timeout}s:\n{self.output()}")


@pytest.fixture(scope="module")
def users_redis(tmp_path_factory) -> Iterator[redis.Redis]:
    """A Redis of the user's, which REDIS_URL names to the demo: it must stay untouched.

    One of this module's own, so that any key in it but the one written here is the demo's.
    """
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("users-redis"))
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/15")
    client.set(KEPT_KEY, "the user's")
    yield client
    client.close()
    stop(proc)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, users_redis) -> Iterator[RunningDemo]:
    """Start the demo (bot over HTTP) on free ports, a REDIS_URL set to the user's Redis;
    stop it afterwards."""
    kwargs = users_redis.connection_pool.connection_kwargs
    users_url = f"redis://{kwargs['host']}:{kwargs['port']}/15"
    with running_demo(tmp_path_factory.mktemp("demo") / "demo", REDIS_URL=users_url) as running:
        yield running


@contextlib.contextmanager
def running_demo(root: Path, **settings: str) -> Iterator[RunningDemo]:
    """Run `python -m devkit.demo` with its own ports (its Redis's too), its own directory,
    and `settings`."""
    ports = _distinct_free_ports(len(PORTS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MLFLOW_", "DEMO_"))}
    env.update({var: str(port) for (_, var, _), port in zip(PORTS, ports, strict=True)})
    env.update(DEMO_DIR=str(root), PYTHONUNBUFFERED="1", **settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devkit.demo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = RunningDemo(proc, {s: p for (s, _, _), p in zip(PORTS, ports, strict=True)}, root)
    reader = threading.Thread(target=running.collect, daemon=True)
    reader.start()
    try:
        running.wait_for("is ready", READY_TIMEOUT)
        yield running
    finally:
        _make_sure_stopped(running)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's), for the module's pages."""
    assert Path(CHROMIUM).exists(), "no Chromium: run scripts/ensure-chromium.sh"
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def page(demo, browser):
    """A page on the sandbox, 1200x900 like the README's screenshot."""
    with page_on(browser, demo.url("sandbox") + "/") as tab:
        yield tab


@contextlib.contextmanager
def page_on(browser, url: str):
    """Open `url` in a new 1200x900 page; close it afterwards."""
    tab = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        tab.goto(url)
        yield tab
    finally:
        tab.close()


@pytest.mark.slow
def test_every_tutorial_step_in_the_browser(demo, page, users_redis, tmp_path):
    """The README's and the tutorial's steps 1 to 4, taken as a newcomer takes them."""
    client = MlflowClient(demo.url("mlflow"))
    the_start_said_what_it_did_and_left_the_users_redis_alone(demo, users_redis)
    expect(page.get_by_test_id("header")).to_have_text(HEADER)
    every_role_shows_whole_in_the_picker(page)

    # 1. ada approves v1: Production in MLflow, where its alias shows it, and served.
    act_as(page, ADA)
    v1 = notice(page, "1")
    assert table_rows(v1)[1:] == [
        ["accuracy", "0.854", "–", "–", "✓ ≥ 0.8"],
        ["f1", "0.7384", "–", "–", "✓ ≥ Production − 0.05 (no Production to compare)"],
    ]
    v1.get_by_test_id("button-approve_version").click()
    wait_for_stage(client, "1", "Production")
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"
    expect(v1).to_contain_text("Approved by")
    expect(v1).to_contain_text("Now in Production since")
    # MLflow 3's registry page has no Stage column: the notice says where to look.
    expect(v1).to_contain_text("alias @production on the model's page")
    expect(v1).to_contain_text("switch off New model registry UI")
    expect(v1.get_by_test_id("button-approve_version")).to_have_count(0)
    wait_until_served(demo, "1")
    expect(page.get_by_test_id("served-version")).to_contain_text("v1")
    expect(page.get_by_test_id("thread")).to_contain_text("now Production")
    readme_example = requests.post(f"{demo.url('predict')}/predict", json=README_ROWS, timeout=5)
    assert readme_example.json() == {"predictions": [1.0, 0.0], "version": "1"}

    # 2. olaf is refused; rita, the requester, withdraws hers.
    send_another_run(page)
    v2 = notice(page, "2")
    refused_for_non_approver(page, v2)
    withdrawn_by_the_requester(page, v2)
    wait_for_stage(client, "2", "Archived")
    expect(v2.locator(".b-header")).to_have_text(f"{MODEL} v2: Withdrawn")
    expect(v2).to_contain_text("Withdrawn by the requester @rita")

    # 3. ada approves v3, then rolls back to v1 by command, with a reason.
    send_another_run(page)
    v3 = notice(page, "3")
    metrics_table_is_aligned_in_one_format_with_markers(v3)
    v3.get_by_test_id("button-approve_version").click()
    wait_for_stage(client, "3", "Production")
    wait_until_served(demo, "3")
    # The notice of the version v3 replaced says so, not "Approved" as if current.
    expect(v1.locator(".b-header")).to_have_text(f"{MODEL} v1: Approved, now Archived")
    expect(v1).to_contain_text("when v3 replaced it")
    expect(v3.locator(".b-header")).to_have_text(f"{MODEL} v3: Approved, in Production")
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "sandbox.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000  # a real rendering, not a blank page
    a_command_error_keeps_the_text(page)
    roll_back_by_command(page, current="3", target="1", reason="v3 misbehaves")
    wait_for_stage(client, "1", "Production")
    wait_for_stage(client, "3", "Archived")
    wait_until_served(demo, "1")
    expect(page.get_by_test_id("served-version")).to_contain_text("v1")
    expect(v3.locator(".b-header")).to_have_text(f"{MODEL} v3: Approved, now Archived")
    expect(v3).to_contain_text("when @ada rolled back to v1.")
    expect(v1.locator(".b-header")).to_have_text(f"{MODEL} v1: Production again")
    expect(v1).to_contain_text("@ada rolled back to it from v3")

    # 4. An alert on v1: the only other version that served is v3, which ada pulled.
    the_alert_proposes_nothing_and_names_the_rollback(page, client)
    reads_well(page)


@pytest.mark.slow
def test_the_home_tab_then_an_alert_whose_plan_is_confirmed(demo, page):
    """The Home tab laid out one block a row; the tutorial's step 5; the gate that keeps a
    run out of Staging."""
    client = MlflowClient(demo.url("mlflow"))
    act_as(page, ADA)
    page.get_by_test_id("tab-channel").click()
    before = len(client.search_model_versions(f"name = '{MODEL}'"))
    send_another_run(page)
    version = str(before + 1)
    message = notice(page, version)

    page.get_by_test_id("tab-home").click()
    home = page.get_by_test_id("home-view")
    expect(home).to_contain_text("Awaiting your decision")
    expect(home).to_contain_text(f"{MODEL} v{version} in Staging")
    home_is_one_block_a_row_with_buttons_of_normal_height(home)
    # Newest first: this run's version heads the list.
    home.get_by_test_id("button-approve_version").first.click()
    wait_for_stage(client, version, "Production")
    expect(home).to_contain_text(f"Production: v{version}")
    expect(home).to_contain_text("approved by @ada")
    expect(home).to_contain_text("rolled back from v3 to v1 by @ada")
    expect(home).to_contain_text("v2 withdrawn by @rita")

    page.get_by_test_id("tab-channel").click()
    expect(message).to_contain_text("Approved by")
    expect(message.get_by_test_id("button-approve_version")).to_have_count(0)

    # 5. An alert on it: a plan back to v1, which served before it; ada confirms.
    wait_until_served(demo, version)
    confirm_the_plan_of_an_alert(page, current=version, target="1")
    wait_for_stage(client, "1", "Production")
    wait_until_served(demo, "1")

    # The fifth run fails the f1 gate: kept out of Staging, and titled so.
    send_another_run(page)
    kept_out = notice(page, str(int(version) + 1))
    expect(kept_out.locator(".b-header")).to_have_text(
        f"{MODEL} v{int(version) + 1}: kept out of Staging by its gates"
    )
    expect(kept_out.get_by_test_id("button-approve_version")).to_have_count(0)
    status = run_command(page, f"/registry status {MODEL}", has="Production: v1")
    expect(status).to_contain_text("accuracy 0.854, f1 0.7384")
    expect(status).to_contain_text("Production needs 1 approval")
    reads_well(page)


@pytest.mark.slow
def test_registry_bot_doctor_against_the_demo_passes_every_check(demo):
    """The operator's check, with the demo's own settings: every line ok, exit 0."""
    config = DemoConfig(root=demo.root, ports=demo.ports)
    env = demo_env(config, f"redis://127.0.0.1:{demo.ports['redis']}/0")
    code = "from registry.process.cli import run; run()"
    done = subprocess.run(
        [sys.executable, "-c", code, "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=demo.root,  # no .env there: only the demo's settings count
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    names = [line.split(None, 1)[1].split(":", 1)[0] for line in lines]
    assert names == ["settings", "redis", "mlflow", "slack token", "slack scopes", "channel CDEMO"]
    assert all(line.startswith("ok ") for line in lines), done.stdout


@pytest.mark.slow
def test_ctrl_c_stops_every_process_it_started(demo):
    tree = descendants(demo.proc.pid)
    assert len(tree) >= 6, f"expected the demo's services below it, found {tree}"

    demo.proc.send_signal(signal.SIGINT)
    demo.proc.wait(STOP_TIMEOUT)

    assert demo.proc.returncode == 0, demo.output()
    assert "stopped" in demo.output()
    assert [p for p in demo.ports.values() if port_in_use(p)] == []
    assert [pid for pid in tree if alive(pid)] == []
    assert _processes_naming(demo.root) == []


@pytest.mark.slow
def test_the_demo_in_socket_mode_is_driven_over_the_websocket(browser, tmp_path):
    with running_demo(tmp_path / "demo", DEMO_SOCKET_MODE="1") as socket_demo:
        assert "in Socket Mode" in socket_demo.output()
        bot_port = socket_demo.ports["bot"]
        assert not port_in_use(bot_port)  # no HTTP endpoint: the bot dialled out instead
        client = MlflowClient(socket_demo.url("mlflow"))
        with page_on(browser, socket_demo.url("sandbox") + "/") as tab:
            act_as(tab, OLAF)
            v1 = notice(tab, "1")
            refused_for_non_approver(tab, v1)  # a refusal, then a switch back to ada
            tab.get_by_test_id("tab-home").click()
            home = tab.get_by_test_id("home-view")
            expect(home).to_contain_text(f"{MODEL} v1 in Staging")
            home.get_by_test_id("button-approve_version").first.click()
            wait_for_stage(client, "1", "Production")
            tab.get_by_test_id("tab-channel").click()
            expect(v1).to_contain_text("Approved by")
            tab.get_by_test_id("command-input").fill(f"/registry status {MODEL}")
            tab.get_by_test_id("command-input").press("Enter")
            status = tab.get_by_test_id("ephemeral").filter(has_text="Production: v1")
            expect(status).to_have_count(1)


# -- what a visitor does -----------------------------------------------------------------------


def act_as(page, user: str) -> None:
    """Pick who the visitor is in the sandbox's user picker."""
    page.get_by_test_id("user-picker").select_option(user)


def notice(page, version: str):
    """Return the Staging notice of a version, once it is on the page."""
    found = page.get_by_test_id("message").filter(has_text=f"{MODEL} v{version}: ")
    expect(found).to_have_count(1)
    return found


# Records every text the sidebar's training note takes: with a quick loop the "Sent"
# note can come and go between two of Playwright's polls.
WATCH_TRAIN_STATUS = """() => {
    const status = document.querySelector('[data-testid="train-status"]');
    window.trainStatusSeen = [];
    new MutationObserver(() => window.trainStatusSeen.push(status.textContent))
        .observe(status, {childList: true, characterData: true, subtree: true});
}"""


def send_another_run(page) -> None:
    """Send a run from the sidebar; its note goes once the run's notice is in the channel."""
    before = page.get_by_test_id("message").count()
    page.evaluate(WATCH_TRAIN_STATUS)
    page.get_by_test_id("train-button").click()
    expect(page.get_by_test_id("message")).to_have_count(before + 1)
    expect(page.get_by_test_id("train-status")).to_have_text("")
    seen = page.evaluate("window.trainStatusSeen")
    sent = [i for i, text in enumerate(seen) if text.startswith("Sent training run")]
    assert sent and seen[sent[-1] + 1 :] and seen[-1] == "", seen  # shown, then cleared


def every_role_shows_whole_in_the_picker(page) -> None:
    """Each "name (role)" fits its picker, wide window or narrow."""
    picker = page.get_by_test_id("user-picker")
    for width in (1200, 700):
        page.set_viewport_size({"width": width, "height": 900})
        for user in (RITA, ADA, OLAF):
            picker.select_option(user)
            fit = page.evaluate(FITS)
            assert fit["need"] <= fit["room"], (width, fit)
        assert fit["text"] == "olaf (not an approver)"
    picker.select_option(RITA)
    assert page.evaluate(FITS)["text"] == "rita (requester, not an approver)"
    page.set_viewport_size({"width": 1200, "height": 900})


# The width the picker's chosen option needs, and the room left of the dropdown arrow.
FITS = """() => {
  const picker = document.querySelector("[data-testid=user-picker]");
  const style = getComputedStyle(picker);
  const pen = document.createElement("canvas").getContext("2d");
  pen.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const text = picker.options[picker.selectedIndex].text;
  const room = picker.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {text, need: pen.measureText(text).width, room};
}"""


def table_rows(message) -> list[list[str]]:
    """Return a notice's metrics table as rows of cells (two or more spaces apart)."""
    text = message.locator("pre.code").inner_text()
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def metrics_table_is_aligned_in_one_format_with_markers(message) -> None:
    """v3 against v1 (Production): aligned columns, the one number format, better marked."""
    lines = message.locator("pre.code").inner_text().strip().splitlines()
    header, *rows = lines
    assert header.split() == ["metric", "candidate", "production", "change", "gate"]
    # Numbers are right-aligned under their headings, notes start under "gate".
    for heading in ("candidate", "production", "change"):
        end = header.index(heading) + len(heading)
        assert all(row[end - 1] != " " and row[end] == " " for row in rows), (heading, lines)
    assert all(row.index("✓") == header.index("gate") for row in rows), lines
    assert table_rows(message)[1:] == [
        ["accuracy", "0.856", "0.854", "+0.002", "better", "✓ ≥ 0.8"],
        ["f1", "0.7616", "0.7384", "+0.02324", "better", "✓ ≥ Production − 0.05"],
    ]


def refused_for_non_approver(page, message) -> None:
    """A non-approver's click gets a reply that only they see."""
    act_as(page, OLAF)
    message.get_by_test_id("button-approve_version").click()
    refusal = page.get_by_test_id("ephemeral").filter(has_text="Only approvers")
    expect(refusal).to_have_count(1)
    act_as(page, ADA)
    expect(refusal).to_have_count(0)


def withdrawn_by_the_requester(page, message) -> None:
    """rita, who requested it and approves nothing, withdraws it through the reject modal."""
    act_as(page, RITA)
    message.get_by_test_id("button-approve_version").click()
    refusal = page.get_by_test_id("ephemeral").filter(has_text="Only approvers may approve")
    expect(refusal).to_have_count(1)
    reject_through_the_modal(page, message)
    act_as(page, ADA)


def reject_through_the_modal(page, message, *, title: str = "Withdraw version") -> None:
    """Open the reject modal (the requester's says Withdraw); see an empty and a blank
    reason refused; give a real one."""
    message.get_by_test_id("button-reject_version").click()
    modal = page.get_by_test_id("modal")
    expect(modal).to_be_visible()
    expect(modal.locator(".m-title")).to_have_text(title)
    expect(modal.get_by_test_id("modal-submit")).to_have_text(title.split()[0])
    modal.get_by_test_id("modal-submit").click()
    expect(modal.get_by_test_id("modal-error")).to_have_text(REQUIRED_FIELD)
    reason = modal.get_by_test_id("modal-input-reason")
    reason.fill("   ")  # Slack sends this on; the bot answers response_action=errors
    modal.get_by_test_id("modal-submit").click()
    expect(modal.get_by_test_id("modal-error")).to_have_text(EMPTY_REASON)
    reason.fill("f1 fell well below the Production version's")
    modal.get_by_test_id("modal-submit").click()
    expect(modal).to_have_count(0)


def confirm_the_plan_of_an_alert(page, *, current: str, target: str) -> None:
    """Fire an alert from the sandbox; confirm the plan it brings to the channel, as an approver."""
    page.get_by_test_id("alert-button").click()
    expect(page.get_by_test_id("alert-status")).to_contain_text("handled 1")
    plan = page.get_by_test_id("message").filter(
        has_text=f"Roll {MODEL} back from v{current} to v{target}"
    )
    expect(plan).to_have_count(1)
    expect(plan).to_contain_text(f"Alert PredictionErrorRate is firing for {MODEL} v{current}")
    expect(plan.get_by_role("link", name="Open the alert's source")).to_have_count(1)
    expect(plan).not_to_contain_text("Confirm asks for the reason")
    plan.get_by_test_id("button-rollback_confirm").click()
    # The plan stays in the channel for everyone, its buttons replaced by who confirmed it.
    expect(plan).to_contain_text("Confirmed by @ada")
    expect(plan.get_by_test_id("button-rollback_confirm")).to_have_count(0)
    expect(page.get_by_test_id("modal")).to_have_count(0)  # no reason asked: the alert is one


def the_alert_proposes_nothing_and_names_the_rollback(page, client) -> None:
    """After ada's rollback from v3 to v1, an alert on v1 never proposes v3: the guard says
    there is no plan, who pulled v3, when and why, and moves nothing."""
    page.get_by_test_id("alert-button").click()
    expect(page.get_by_test_id("alert-status")).to_contain_text("handled 1")
    said = page.get_by_test_id("message").filter(has_text="No rollback plan")
    expect(said).to_have_count(1)
    expect(said).to_contain_text(f"Alert PredictionErrorRate is firing for {MODEL} v1")
    expect(said).to_contain_text("v3 was rolled back from by @ada on ")
    expect(said).to_contain_text("(v3 misbehaves)")
    expect(said).to_contain_text("Nothing was changed.")
    expect(said.get_by_test_id("button-rollback_confirm")).to_have_count(0)
    plans = page.get_by_test_id("message").filter(has_text=f"Roll {MODEL} back from v1 to")
    expect(plans).to_have_count(0)
    assert client.get_model_version(MODEL, "1").current_stage == "Production"
    assert client.get_model_version(MODEL, "3").current_stage == "Archived"


# The Home tab's blocks, each with its box, and the height of each button in it.
HOME_BOXES = """(home) => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, width: r.width}; };
  return {
    view: box(home),
    blocks: [...home.children].map(box),
    buttons: [...home.querySelectorAll("button")].map((b) => b.getBoundingClientRect().height),
  };
}"""


def home_is_one_block_a_row_with_buttons_of_normal_height(home) -> None:
    """One block under another, each as wide as the view; buttons of a button's height."""
    found = home.evaluate(HOME_BOXES)
    blocks, buttons = found["blocks"], found["buttons"]
    assert len(blocks) >= 5 and buttons, found
    for above, below in zip(blocks, blocks[1:], strict=False):
        assert below["top"] >= above["bottom"] - 1, found  # the next row, never beside it
    assert len({round(b["left"]) for b in blocks}) == 1, found
    assert all(b["width"] >= found["view"]["width"] * 0.8 for b in blocks), found
    assert all(0 < height < 60 for height in buttons), buttons


def run_command(page, text: str, *, has: str):
    """Type a command; return its answer, shown only to the visitor."""
    box = page.get_by_test_id("command-input")
    box.fill(text)
    box.press("Enter")
    answer = page.get_by_test_id("ephemeral").filter(has_text=has)
    expect(answer).to_have_count(1)
    return answer


# Words and formats no page may show: raw event names, "(s)", the command for the verb,
# the channel's ID, 12-hour times.
NEVER_SHOWN = re.compile(
    r"gate_failed|alert_received|rolled_back|approval_counted|out_of_band|canary_verdict"
    r"|\(s\)|may rollback|CDEMO|\b\d{1,2}:\d\d ?[AP]M\b"
)
DECIMAL = re.compile(r"(?<![\w.:/-])[+-]?\d+\.\d+(?:e[+-]\d+)?(?![\w.])")


def reads_well(page) -> None:
    """The channel and the Home tab as ada reads them: no raw event name, no "(s)", the
    channel by its name, every number in the one format, every time 24-hour UTC."""
    act_as(page, ADA)
    for tab, where in (("home", "home"), ("channel", "channel")):
        page.get_by_test_id(f"tab-{tab}").click()
        if tab == "home":
            expect(page.get_by_test_id("home-view")).to_contain_text("Recent changes")
        shown = page.get_by_test_id(where).inner_text()
        assert not NEVER_SHOWN.findall(shown), (tab, NEVER_SHOWN.findall(shown))
        numbers = DECIMAL.findall(shown)
        assert numbers or tab == "home", tab  # the channel's tables hold some, at least
        for number in numbers:
            assert number == format_number(float(number), signed=number[0] == "+"), number
        spans = re.sub(r"from \d\d:\d\d to \d\d:\d\d UTC", "", shown)  # format_span's
        times = re.findall(r"\b\d\d:\d\d\b(?! UTC)", spans)
        assert times == [], (tab, times)  # every clock time says UTC
        for line in shown.splitlines():
            dates = re.findall(r"\d{4}-\d\d-\d\d", line)
            assert len(dates) == len(set(dates)), line  # a date said once in a line


def a_command_error_keeps_the_text(page) -> None:
    """Text that is no slash command is refused, and stays in the box to be fixed."""
    box = page.get_by_test_id("command-input")
    box.fill(f"registry status {MODEL}")
    box.press("Enter")
    expect(page.get_by_test_id("status")).to_contain_text("Only slash commands reach the bot")
    expect(box).to_have_value(f"registry status {MODEL}")
    expect(page.get_by_test_id("command-echo")).to_have_count(0)  # nothing was sent
    box.fill("")


def roll_back_by_command(page, *, current: str, target: str, reason: str) -> None:
    """Type the rollback command (echoed above its answer), confirm, and give a reason."""
    box = page.get_by_test_id("command-input")
    box.fill(f"/registry rollback {MODEL}")
    box.press("Enter")
    expect(box).to_have_value("")
    echo = page.get_by_test_id("command-echo").filter(has_text=f"/registry rollback {MODEL}")
    expect(echo).to_have_count(1)
    plan = page.get_by_test_id("ephemeral").filter(
        has_text=f"Roll {MODEL} back from v{current} to v{target}"
    )
    expect(plan).to_have_count(1)
    expect(plan).to_contain_text("Confirm asks for the reason (optional)")
    assert comes_before(echo, plan), "the command is shown above its answer"
    plan.get_by_test_id("button-rollback_confirm").click()
    modal = page.get_by_test_id("modal")
    expect(modal).to_contain_text("(optional)")
    modal.get_by_test_id("modal-input-reason").fill(reason)
    modal.get_by_test_id("modal-submit").click()
    expect(modal).to_have_count(0)
    # The bot answers through the plan's response URL with replace_original: no buttons left.
    done = page.get_by_test_id("ephemeral").filter(has_text="is Production again")
    expect(done).to_have_count(1)
    expect(plan.get_by_test_id("button-rollback_confirm")).to_have_count(0)
    announced = page.get_by_test_id("message").filter(has_text=f"Reason: {reason}")
    expect(announced).to_have_count(1)


def comes_before(first, second) -> bool:
    """Say whether `first` is above `second` in the page."""
    return bool(
        first.evaluate(
            "(a, b) => !!(a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING)",
            second.element_handle(),
        )
    )


# -- checks ------------------------------------------------------------------------------------


def the_start_said_what_it_did_and_left_the_users_redis_alone(demo, users_redis) -> None:
    """The demo said what it waited for, used its own Redis, printed its ports and how long
    it took; the Redis REDIS_URL names kept its data."""
    said = demo.output()
    for line in ("starting its server on port", "to be ready…", "training the first churn"):
        assert line in said, said
    redis_port = demo.ports["redis"]
    assert f"redis://127.0.0.1:{redis_port}/0: the demo's own" in said, said
    assert f"redis {redis_port}" in said and f"sandbox {demo.ports['sandbox']}" in said, said
    ready = re.search(r"registry-bot demo is ready \((\d+) s\)", said)
    assert ready and int(ready.group(1)) < 90, said
    assert users_redis.get(KEPT_KEY) == b"the user's"
    keyspace = users_redis.info("keyspace")
    assert list(keyspace) == ["db15"] and keyspace["db15"]["keys"] == 1, keyspace


def wait_for_stage(client, version: str, stage: str, timeout: float = 30) -> None:
    """Wait until the registry shows `version` of the demo model in `stage` (and, for
    Production, under the alias registry-bot moves just after the stage)."""

    def there() -> bool:
        mv = client.get_model_version(MODEL, version)
        return mv.current_stage == stage and (stage != "Production" or "production" in mv.aliases)

    wait_until(there, timeout, f"{MODEL} v{version} in {stage}", interval=0.3)


def wait_until_served(demo: RunningDemo, version: str, timeout: float = 30) -> None:
    """Wait until the prediction API serves `version` and predicts with it.

    The reload starts within a second of the event (tests/test_served_follows.py checks
    that); loading the model takes longer on a busy machine, so this waits generously.
    """

    def served() -> bool:
        answer = requests.get(f"{demo.url('predict')}/version", timeout=2).json()
        return str(answer.get("version")) == version

    wait_until(served, timeout, f"prediction API serving v{version}", interval=0.3)
    resp = requests.post(f"{demo.url('predict')}/predict", json={"inputs": [[0.0] * 8]}, timeout=5)
    assert resp.status_code == 200 and resp.json()["version"] == version, resp.text


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _processes_naming(root: Path) -> list[str]:
    """Return the command lines of live processes that name the demo directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def _make_sure_stopped(demo: RunningDemo) -> None:
    """Stop the demo if a test left it running; kill whatever it leaves behind."""
    tree = descendants(demo.proc.pid)
    if demo.proc.poll() is None:
        demo.proc.send_signal(signal.SIGINT)
        try:
            demo.proc.wait(STOP_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            demo.proc.kill()
            demo.proc.wait(5)
    for pid in tree:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


# -- the sandbox alone: what it sends the bot, and what it shows ------------------------------

SECRET = "sandbox-test-secret"
CHANNEL = "CDEMO"
USERS = {ADA: {"name": "ada", "role": "approver"}, OLAF: {"name": "olaf", "role": ""}}


class FakeBot:
    """An HTTP endpoint standing in for the bot: checks Slack's signature, records, answers."""

    def __init__(self) -> None:
        from werkzeug.serving import make_server

        self.received: list[dict] = []
        self.answer = lambda received: ("", 200)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/slack/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        import json

        from slack_sdk.signature import SignatureVerifier
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        body = request.get_data(as_text=True)
        headers = request.headers
        signed = SignatureVerifier(SECRET).is_valid(
            body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
        form = dict(request.form.items())
        received = {
            "signed": signed,
            "form": form,
            "payload": json.loads(form["payload"]) if "payload" in form else None,
            "json": request.get_json(silent=True),
        }
        self.received.append(received)
        text, status = self.answer(received)
        mimetype = "application/json" if text.startswith("{") else "text/plain"
        return Response(text, status, mimetype=mimetype)(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Sandbox:
    """The sandbox served on a free port, in front of a fake bot."""

    url: str
    bot: FakeBot
    double: object

    def api(self, method: str, **params) -> dict:
        """Call the Slack Web API the sandbox serves, as the bot does."""
        return requests.post(
            f"{self.url}/api/{method}",
            json=params,
            timeout=5,
            headers={"Authorization": "Bearer xoxb-sandbox"},
        ).json()

    def act(self, action: str, user: str, **body) -> dict:
        return requests.post(
            f"{self.url}/sandbox/{action}", json={"user": user, **body}, timeout=10
        ).json()

    def state(self, user: str) -> dict:
        return requests.get(f"{self.url}/sandbox/state", params={"user": user}, timeout=5).json()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """Serve create_sandbox() over HTTP, as the demo does, with a fake bot behind it."""
    from werkzeug.serving import make_server

    from devkit.sandbox.app import create_sandbox
    from devkit.slack_double import SlackDouble

    bot = FakeBot()
    port = free_port()
    double = SlackDouble(token="xoxb-sandbox", team_id="T0DEMO", users=USERS, port=port)
    app = create_sandbox(
        double=double,
        bot_url=bot.url,
        signing_secret=SECRET,
        channel=CHANNEL,
        on_train=lambda: "trained",
        on_alert=lambda: "fired",
    )
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Sandbox(f"http://127.0.0.1:{port}", bot, double)
    finally:
        server.shutdown()
        server.server_close()
        bot.close()


def responds(body: dict):
    """Answer a click as the bot does: acknowledge, and post `body` to its response URL."""

    def answer(received):
        requests.post(received["payload"]["response_url"], json=body, timeout=5)
        return "", 200

    return answer


BUTTONS = [
    {
        "type": "actions",
        "block_id": "decision",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Approve"},
                "action_id": "approve_version",
                "value": "v1",
            }
        ],
    }
]


def test_a_click_sends_the_signed_block_actions_payload_slack_sends(sandbox):
    ts = sandbox.api("chat.postMessage", channel=CHANNEL, text="notice", blocks=BUTTONS)["ts"]

    answer = sandbox.act("click", ADA, ts=ts, block=0, element=0, action_id="approve_version")

    assert answer == {"ok": True, "body": ""}
    [received] = sandbox.bot.received
    payload = received["payload"]
    assert received["signed"]
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == ADA and payload["team"]["id"] == "T0DEMO"
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["message"]["ts"] == ts and payload["channel"]["id"] == CHANNEL
    assert payload["response_url"].startswith(f"{sandbox.url}/response/")
    assert payload["trigger_id"]
    [action] = payload["actions"]
    assert (action["action_id"], action["value"], action["block_id"]) == (
        "approve_version",
        "v1",
        "decision",
    )
    assert float(action["action_ts"]) > 0


def test_replace_original_replaces_the_ephemeral_whose_button_was_clicked(sandbox):
    sandbox.api("chat.postEphemeral", channel=CHANNEL, user=ADA, text="plan", blocks=BUTTONS)
    [plan] = sandbox.state(ADA)["messages"]

    sandbox.bot.answer = responds({"text": "Done.", "replace_original": True})
    sandbox.act("click", ADA, ephemeral=plan["id"], block=0, element=0, action_id="approve_version")

    [shown] = sandbox.state(ADA)["messages"]
    assert (shown["id"], shown["text"], shown["blocks"]) == (plan["id"], "Done.", [])
    assert sandbox.bot.received[0]["payload"]["container"]["is_ephemeral"] is True
    assert "message" not in sandbox.bot.received[0]["payload"]
    assert sandbox.state(OLAF)["messages"] == []


def test_a_response_url_post_without_replace_adds_an_ephemeral_for_the_clicker(sandbox):
    ts = sandbox.api("chat.postMessage", channel=CHANNEL, text="notice", blocks=BUTTONS)["ts"]
    sandbox.bot.answer = responds({"text": "Not you."})

    sandbox.act("click", OLAF, ts=ts, block=0, element=0, action_id="approve_version")

    assert [m["text"] for m in sandbox.state(OLAF)["messages"]] == ["notice", "Not you."]
    assert [m["text"] for m in sandbox.state(ADA)["messages"]] == ["notice"]


def test_modal_errors_from_the_bot_are_shown_and_an_empty_answer_closes_it(sandbox):
    ts = sandbox.api("chat.postMessage", channel=CHANNEL, text="notice", blocks=BUTTONS)["ts"]
    view = {
        "type": "modal",
        "callback_id": "reject_reason",
        "title": {"type": "plain_text", "text": "Reject"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": "reason_input"},
            }
        ],
    }

    def open_view(received):
        sandbox.api("views.open", trigger_id=received["payload"]["trigger_id"], view=view)
        return "", 200

    sandbox.bot.answer = open_view
    sandbox.act("click", ADA, ts=ts, block=0, element=0, action_id="approve_version")
    modal = sandbox.state(ADA)["modal"]
    assert modal["view"]["callback_id"] == "reject_reason" and sandbox.state(OLAF)["modal"] is None

    view_id = modal["view"]["id"]
    empty = sandbox.act("submit", ADA, view_id=view_id, values={"reason": {"reason_input": ""}})
    assert empty == {"errors": {"reason": REQUIRED_FIELD}}
    assert len(sandbox.bot.received) == 1  # Slack refuses an empty required input itself

    sandbox.bot.answer = lambda received: (
        '{"response_action": "errors", "errors": {"reason": "Say why."}}',
        200,
    )
    blank = {"reason": {"reason_input": "  "}}
    assert sandbox.act("submit", ADA, view_id=view_id, values=blank) == {
        "errors": {"reason": "Say why."}
    }
    submitted = sandbox.bot.received[-1]["payload"]
    assert submitted["type"] == "view_submission" and sandbox.bot.received[-1]["signed"]
    assert submitted["view"]["state"]["values"] == {
        "reason": {"reason_input": {"type": "plain_text_input", "value": "  "}}
    }
    assert sandbox.state(ADA)["modal"]["errors"] == {"reason": "Say why."}

    sandbox.bot.answer = lambda received: ("", 200)
    done = sandbox.act("submit", ADA, view_id=view_id, values={"reason": {"reason_input": "ok"}})
    assert done == {"closed": True} and sandbox.state(ADA)["modal"] is None


def test_a_slash_command_is_sent_as_slack_sends_it(sandbox):
    sandbox.act("command", ADA, text="/registry rollback churn 3 broke it")

    [received] = sandbox.bot.received
    form = received["form"]
    assert received["signed"]
    assert (
        form["command"],
        form["text"],
        form["user_id"],
        form["channel_id"],
        form["team_id"],
    ) == ("/registry", "rollback churn 3 broke it", ADA, CHANNEL, "T0DEMO")
    assert form["response_url"].startswith(f"{sandbox.url}/response/") and form["trigger_id"]


def test_a_typed_command_is_echoed_to_its_sender_above_its_answer(sandbox):
    sandbox.bot.answer = lambda received: ('{"text": "Usage: /registry help"}', 200)

    sandbox.act("command", ADA, text="  /registry statsu churn ")

    echo, answer = sandbox.state(ADA)["messages"]
    assert (echo["echo"], echo["text"], echo["user"]) == (True, "/registry statsu churn", ADA)
    assert (answer["echo"], answer["text"]) == (False, "Usage: /registry help")
    assert float(echo["ts"]) <= float(answer["ts"])
    assert sandbox.state(OLAF)["messages"] == []  # nobody else sees what ada typed


def test_text_that_is_no_command_is_neither_sent_nor_echoed(sandbox):
    answer = sandbox.act("command", ADA, text="status churn")

    assert answer == {"error": NOT_A_COMMAND}
    assert sandbox.bot.received == []
    [hint] = sandbox.state(ADA)["messages"]
    assert hint["from_slack"] and not hint["echo"]


def test_a_failing_bot_is_reported_to_the_person_who_acted(sandbox):
    sandbox.bot.answer = lambda received: ("invalid request", 401)

    answer = sandbox.act("command", ADA, text="/registry help")

    assert "HTTP 401" in answer["error"]
    echo, notice = sandbox.state(ADA)["messages"]
    assert echo["echo"] and echo["text"] == "/registry help"
    assert notice["from_slack"] and "HTTP 401" in notice["text"]
    assert sandbox.state(OLAF)["messages"] == []


def test_the_page_and_the_web_api_share_one_port(sandbox):
    assert "registry-bot sandbox" in requests.get(sandbox.url + "/", timeout=5).text
    assert sandbox.api("auth.test")["team_id"] == "T0DEMO"
    state = sandbox.state(ADA)
    assert state["header"] == HEADER
    assert {u["id"] for u in state["users"]} >= {ADA, OLAF}
    assert requests.post(f"{sandbox.url}/sandbox/train", timeout=5).json() == {"message": "trained"}
    assert requests.post(f"{sandbox.url}/sandbox/alert", timeout=5).json() == {"message": "fired"}
    assert state["can_train"] and state["can_alert"]


def test_a_refusal_for_a_click_on_a_thread_parent_shows_in_the_channel(sandbox):
    ts = sandbox.api("chat.postMessage", channel=CHANNEL, text="notice", blocks=BUTTONS)["ts"]
    sandbox.api("chat.postMessage", channel=CHANNEL, thread_ts=ts, text="a reply")

    sandbox.bot.answer = responds({"text": "Not you."})
    sandbox.act("click", OLAF, ts=ts, block=0, element=0, action_id="approve_version")

    notice, refusal = sandbox.state(OLAF)["messages"]
    assert [r["text"] for r in notice["replies"]] == ["a reply"]
    assert (refusal["text"], refusal["ephemeral"]) == ("Not you.", True)
    assert "thread_ts" not in sandbox.bot.received[0]["payload"]["container"]


def test_opening_the_home_tab_sends_app_home_opened_and_its_clicks_carry_the_view(sandbox):
    answer = sandbox.act("home", ADA)

    assert answer == {"ok": True, "body": ""}
    [received] = sandbox.bot.received
    assert received["signed"] and received["form"] == {}
    event = received["json"]["event"]
    assert received["json"]["type"] == "event_callback" and received["json"]["event_id"]
    assert (event["type"], event["user"], event["tab"]) == ("app_home_opened", ADA, "home")

    home = sandbox.api("views.publish", user_id=ADA, view={"type": "home", "blocks": BUTTONS})
    assert sandbox.state(ADA)["home"]["id"] == home["view"]["id"]
    assert sandbox.state(OLAF)["home"] is None
    view_id = home["view"]["id"]
    sandbox.act("click", ADA, view=view_id, block=0, element=0, action_id="approve_version")
    payload = sandbox.bot.received[-1]["payload"]
    assert payload["container"] == {"type": "view", "view_id": view_id}
    assert payload["view"]["type"] == "home" and "response_url" not in payload
    assert payload["actions"][0]["value"] == "v1"
    stale = sandbox.act(
        "click", OLAF, view=view_id, block=0, element=0, action_id="approve_version"
    )
    assert stale == {"error": STALE_MESSAGE}  # someone else's Home tab is not theirs to click


@pytest.fixture
def socket_sandbox() -> Iterator[Sandbox]:
    """The sandbox in Socket Mode: no bot URL is ever called; envelopes go over the link."""
    from werkzeug.serving import make_server

    from devkit.sandbox.app import create_sandbox
    from devkit.slack_double import SlackDouble

    port = free_port()
    double = SlackDouble(token="xoxb-sandbox", team_id="T0DEMO", users=USERS, port=port)
    double.socket.start()
    app = create_sandbox(
        double=double,
        bot_url="http://127.0.0.1:9/never",
        signing_secret=SECRET,
        channel=CHANNEL,
        socket_mode=True,
    )
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Sandbox(f"http://127.0.0.1:{port}", None, double)  # type: ignore[arg-type]
    finally:
        server.shutdown()
        server.server_close()
        double.socket.stop()


class SocketBot:
    """slack_sdk's own Socket Mode client standing in for the bot: records, answers each ack."""

    def __init__(self, sandbox: Sandbox) -> None:
        from slack_sdk import WebClient
        from slack_sdk.socket_mode.builtin import SocketModeClient

        self.received: list[tuple[str, dict]] = []
        self.answer: dict | None = None
        web = WebClient(base_url=f"{sandbox.url}/api/")
        self.client = SocketModeClient(app_token="xapp-test", web_client=web)
        self.client.socket_mode_request_listeners.append(self.on_request)
        self.client.connect()
        assert sandbox.double.socket.wait_connected(timeout=10)

    def on_request(self, client, req) -> None:
        from slack_sdk.socket_mode.response import SocketModeResponse

        self.received.append((req.type, req.payload))
        client.send_socket_mode_response(SocketModeResponse(req.envelope_id, self.answer))


def test_in_socket_mode_the_sandbox_pushes_envelopes_and_shows_what_the_acks_say(
    socket_sandbox,
):
    down = socket_sandbox.act("command", ADA, text="/registry help")
    assert "not reachable" in down["error"]
    bot = SocketBot(socket_sandbox)
    try:
        bot.answer = {"text": "Commands: help, status"}
        socket_sandbox.act("command", ADA, text="/registry help")
        kind, form = bot.received[-1]
        assert (kind, form["command"], form["text"], form["user_id"]) == (
            "slash_commands",
            "/registry",
            "help",
            ADA,
        )
        shown = socket_sandbox.state(ADA)["messages"]
        assert [(m["text"], m["from_slack"]) for m in shown][-1] == (
            "Commands: help, status",
            False,
        )

        bot.answer = None
        ts = socket_sandbox.api("chat.postMessage", channel=CHANNEL, text="notice", blocks=BUTTONS)[
            "ts"
        ]
        socket_sandbox.act("click", ADA, ts=ts, block=0, element=0, action_id="approve_version")
        kind, payload = bot.received[-1]
        assert kind == "interactive" and payload["type"] == "block_actions"
        assert payload["actions"][0]["action_id"] == "approve_version"

        assert socket_sandbox.act("home", ADA) == {"ok": True, "body": ""}
        kind, body = bot.received[-1]
        assert kind == "events_api" and body["event"]["type"] == "app_home_opened"
        envelopes = socket_sandbox.double.socket.envelopes()
        assert len(envelopes) == 3 and all(e.ack_seconds < 3 for e in envelopes)
    finally:
        bot.client.close()


def test_replace_original_on_a_channel_message_edits_it_for_everyone(sandbox):
    ts = sandbox.api("chat.postMessage", channel=CHANNEL, text="plan", blocks=BUTTONS)["ts"]
    closed = [{"type": "section", "text": {"type": "mrkdwn", "text": "Cancelled by <@UADA>"}}]
    sandbox.bot.answer = responds(
        {
            "text": "Cancelled",
            "blocks": closed,
            "replace_original": True,
            "response_type": "in_channel",
        }
    )

    sandbox.act("click", ADA, ts=ts, block=0, element=0, action_id="approve_version")

    for user in (ADA, OLAF):
        [shown] = sandbox.state(user)["messages"]
        assert (shown["ts"], shown["text"], shown["blocks"]) == (ts, "Cancelled", closed)


def test_without_an_alert_callback_the_alert_button_is_off():
    from devkit.sandbox.app import NO_ALERTS, create_sandbox
    from devkit.slack_double import SlackDouble

    app = create_sandbox(
        double=SlackDouble(token="xoxb-sandbox", port=free_port()),
        bot_url="http://127.0.0.1:9/slack/events",
        signing_secret=SECRET,
        channel=CHANNEL,
    )
    client = app.test_client()
    refused = client.post("/sandbox/alert")
    assert refused.status_code == 404 and refused.get_json() == {"error": NO_ALERTS}
    assert client.get("/sandbox/state", query_string={"user": ADA}).get_json()["can_alert"] is False
