"""The `registry-bot` command (SPEC 16): check a policy file, check a deployment, the version.

`registry-bot check-policy FILE` prints what the services would refuse to start with, as
they print it (`file:line: problem`), and exits 1. `registry-bot doctor` reads the settings
as the services do (the environment over `.env`) and asks Redis, MLflow and Slack what the
services will need of them: one line per check, with what to do about a failure, exit 1 if
any failed. It changes nothing anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import registry
from registry.process import preflight
from registry.process.settings import load_settings, merged_env
from registry.rules.policy import PolicyError, load_policy
from registry.rules.settings import Settings, SettingsError, without_password

# What every service but the prediction API needs, and what each Slack transport adds.
NEEDED = ("MLFLOW_TRACKING_URI", "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "TRAINING_WEBHOOK_SECRET")
TRANSPORT_NEEDS = {"http": "SLACK_SIGNING_SECRET", "socket": "SLACK_APP_TOKEN"}
TIMEOUT = 5  # seconds each service may take to answer
# MLflow's client retries for minutes by default; a check wants one quick answer.
MLFLOW_QUICK = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(TIMEOUT),
}
REINSTALL = "add it to the app and reinstall it (slack/manifest.yml lists every scope)"


@dataclass(frozen=True)
class Check:
    """One line of `doctor`: what was checked, whether it holds, what to do if not."""

    name: str
    ok: bool
    said: str
    fix: str = ""

    def line(self) -> str:
        """Return the check as doctor prints it."""
        fix = f" -> {self.fix}" if self.fix and not self.ok else ""
        return f"{'ok' if self.ok else 'FAIL':<4}  {self.name}: {self.said}{fix}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-bot", description="Check a registry-bot policy file or deployment."
    )
    parser.set_defaults(run=lambda _: _usage(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    check = commands.add_parser("check-policy", help="check a policy file (POLICY_FILE)")
    check.add_argument("file", help="the policy file, YAML")
    check.set_defaults(run=check_policy)
    doctor_ = commands.add_parser(
        "doctor", help="check the settings, Redis, MLflow, the Slack token and channels"
    )
    doctor_.add_argument("--env-file", default=".env", help="read over this (default: .env)")
    doctor_.set_defaults(run=doctor)
    version = commands.add_parser("version", help="print registry-bot's version")
    version.set_defaults(run=print_version)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def print_version(_: argparse.Namespace) -> int:
    """Print registry-bot's version."""
    print(f"registry-bot {registry.__version__}")
    return 0


def check_policy(args: argparse.Namespace) -> int:
    """Print the policy file's problem as the services would; 0 when it has none."""
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(exc)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot be read ({exc.strerror or exc})")
        return 1
    models = sorted(policy.models)
    named = f": {', '.join(models)}" if models else ""
    print(f"{args.file}: ok (defaults and {len(models)} model policies{named})")
    return 0


def doctor(args: argparse.Namespace) -> int:
    """Print one line per check; 1 if any failed."""
    failed = False
    for check in checks(args.env_file):
        print(check.line(), flush=True)
        failed = failed or not check.ok
    return 1 if failed else 0


def checks(env_file: str) -> Iterator[Check]:
    """Check the settings, then (if they can be read) Redis, MLflow and Slack."""
    try:
        settings = load_settings(require=(), dotenv_path=env_file)
    except SettingsError as exc:
        yield Check("settings", False, str(exc), f"fix it in the environment or {env_file}")
        return
    yield _settings_check(settings, merged_env(None, env_file))
    yield _redis_check(settings)
    yield _mlflow_check(settings)
    yield from _slack_checks(settings)


def _settings_check(settings: Settings, env: Mapping[str, str]) -> Check:
    needed = [*NEEDED, TRANSPORT_NEEDS[settings.slack_transport or "http"]]
    missing = [name for name in needed if not env.get(name, "").strip()]
    if missing:
        return Check("settings", False, f"not set: {', '.join(missing)}", "set them")
    transport = settings.slack_transport or "http"
    return Check("settings", True, f"read; Slack over {transport}, {settings.registry_mode} mode")


def _redis_check(settings: Settings) -> Check:
    import redis

    where = without_password(settings.redis_url)
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check("redis", False, f"{where} did not answer ({exc})", "start it or fix REDIS_URL")
    finally:
        client.close()
    return Check("redis", True, f"{where} answers")


def _mlflow_check(settings: Settings) -> Check:
    from registry.adapters.mlflow import MlflowGateway

    for key, value in MLFLOW_QUICK.items():
        os.environ.setdefault(key, value)
    where = without_password(settings.mlflow_tracking_uri)
    try:
        MlflowGateway(settings.mlflow_tracking_uri).check()
    except Exception as exc:  # whatever MLflow raises, the answer is: not usable
        said = f"{where} did not answer as a registry ({_first_line(exc)})"
        return Check("mlflow", False, said, "start it or fix MLFLOW_TRACKING_URI")
    return Check("mlflow", True, f"{where} answers")


def _slack_checks(settings: Settings) -> Iterator[Check]:
    from registry.adapters.slack import web_client

    client = web_client(settings, timeout=TIMEOUT, retries=False)
    token = preflight.whose_token(client)
    if token.error:
        fix = "fix SLACK_BOT_TOKEN or SLACK_API_URL"
        yield Check("slack token", False, token.error, fix)
        return
    yield Check("slack token", True, f"the bot {token.user} in {token.team}")
    missing = sorted(preflight.needed_scopes() - set(token.scopes))
    if token.scopes and missing:
        yield Check("slack scopes", False, f"the token lacks {', '.join(missing)}", REINSTALL)
    else:
        yield Check("slack scopes", True, "every scope the bot uses")
    for kind, found in preflight.each_checked(settings, client):
        yield Check(kind, found.ok, found.text, found.fix)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
