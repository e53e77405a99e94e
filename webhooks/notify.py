"""`python -m webhooks notify`: sign and send a training event from a pipeline or CI job."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import requests

from registry.process.settings import load_settings
from registry.rules.events import InvalidEvent, TrainingEvent, parse_training_event, signed_headers
from registry.rules.settings import SettingsError

RETRY_STATUSES = {502, 503, 504}


def build_parser() -> argparse.ArgumentParser:
    """Describe the command line."""
    p = argparse.ArgumentParser(prog="python -m webhooks notify", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--run-id", required=True, help="MLflow run ID that logged the model")
    p.add_argument("--artifact-path", default="model", help="name given to log_model")
    p.add_argument("--model-uri", default="", help="register this URI as is (models:/m-…)")
    p.add_argument("--requested-by", default="", help="Slack user ID or e-mail of the requester")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--description", default="")
    p.add_argument("--url", default="", help="webhooks service base URL (WEBHOOKS_URL)")
    p.add_argument("--retries", type=int, default=5, help="retries on 503 and network errors")
    p.add_argument("--timeout", type=float, default=10.0)
    return p


def event_from_args(args: argparse.Namespace) -> TrainingEvent:
    """Build and validate the event exactly as the server will."""
    metrics = {}
    for item in args.metric:
        name, sep, value = item.partition("=")
        try:
            metrics[name] = float(value) if sep else float("nan")
        except ValueError:
            metrics[name] = float("nan")
    body = {
        "model_name": args.model,
        "run_id": args.run_id,
        "artifact_path": args.artifact_path,
        "model_uri": args.model_uri,
        "requested_by": args.requested_by,
        "metrics": metrics or None,
        "description": args.description,
    }
    return parse_training_event(json.dumps(body).encode())


def send(url: str, secret: str, event: TrainingEvent, *, retries: int, timeout: float) -> dict:
    """POST the signed event, retrying on 503 and network errors; return the answer."""
    body = json.dumps({k: v for k, v in event.as_kwargs().items() if v})
    msg_id = f"msg_{uuid.uuid4().hex}"  # one id for every retry, so the server dedups them
    for attempt in range(retries + 1):
        headers = signed_headers(secret, msg_id, body)  # re-signed: the timestamp moves on
        try:
            resp = requests.post(
                f"{url.rstrip('/')}/hooks/training",
                data=body.encode(),
                headers=headers,
                timeout=timeout,
            )
        except requests.RequestException as exc:
            error: Exception | None = exc
        else:
            if resp.status_code not in RETRY_STATUSES:
                return _answer(resp)
            error = RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        if attempt < retries:
            time.sleep(min(2**attempt, 30))
    raise NotifyError(f"gave up after {retries + 1} attempts: {error}")


class NotifyError(RuntimeError):
    """The server refused the event, or could not be reached."""


def _answer(resp: requests.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        data = {"error": resp.text[:200]}
    if resp.status_code != 202:
        details = "; ".join(data.get("details") or [])
        raise NotifyError(
            f"HTTP {resp.status_code}: {data.get('error')}" + (f" ({details})" if details else "")
        )
    return data


def main(argv: list[str]) -> int:
    """Run the CLI; exit 0 when the event was accepted."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(require=("TRAINING_WEBHOOK_SECRET",))
        event = event_from_args(args)
        answer = send(
            args.url or settings.webhooks_url,
            settings.training_webhook_secrets[0],
            event,
            retries=args.retries,
            timeout=args.timeout,
        )
    except SettingsError as exc:
        print(f"notify: {exc}", file=sys.stderr)
        return 2
    except InvalidEvent as exc:
        print(f"notify: {exc}: {'; '.join(exc.details)}", file=sys.stderr)
        return 2
    except NotifyError as exc:
        print(f"notify: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0
