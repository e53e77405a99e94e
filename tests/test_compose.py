"""docker-compose.yml and .env.example: schema-valid, and consistent with the code they run."""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
# Every module that ships: settings.py reads most settings, a few are read where they are used
# (LOG_LEVEL, the worker's metrics, the prediction API's).
SHIPPED = ("registry", "webhooks", "worker", "bot", "gate")
SHIPPED_FILES = sorted(p for top in SHIPPED for p in (REPO / top).rglob("*.py"))

# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}`, `${NAME:+alt}`, or `$NAME`;
# `$$` is Compose's escape for a literal dollar.
_INTERPOLATION = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_ENV_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
_WSGI_TARGET = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<callable>[A-Za-z_]\w*)(?:\(.*\))?$")


def _compose_schema() -> dict:
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    found = [res for res in vendor.iterdir() if re.fullmatch(r"compose.*\.json", res.name)]
    assert len(found) == 1, f"expected one vendored compose schema, found {[r.name for r in found]}"
    return json.loads(found[0].read_text(encoding="utf-8"))


def _validator() -> jsonschema.protocols.Validator:
    schema = _compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _argv(command: str | list[str]) -> list[str]:
    """Split a service command the way Compose does (a string is split shell-style)."""
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def _commands() -> list[tuple[str, list[str]]]:
    services = _load_compose()["services"]
    return [(name, _argv(svc["command"])) for name, svc in services.items() if "command" in svc]


def _python_m_modules() -> list[tuple[str, str]]:
    return [
        (service, argv[2])
        for service, argv in _commands()
        if len(argv) >= 3 and re.fullmatch(r"python(3(\.\d+)?)?", argv[0]) and argv[1] == "-m"
    ]


def _gunicorn_targets() -> list[tuple[str, str]]:
    # By gunicorn's convention the WSGI target is the last argument.
    return [(service, argv[-1]) for service, argv in _commands() if argv[0] == "gunicorn"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _strings(node: object) -> list[str]:
    """Every string key and value in the parsed compose file (what Compose interpolates)."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _interpolated() -> dict[str, bool]:
    """Each variable the compose file interpolates -> whether every use has a default."""
    seen: dict[str, bool] = {}
    for text in _strings(_load_compose()):
        for match in _INTERPOLATION.finditer(text.replace("$$", "")):
            name = match["braced"] or match["bare"]
            has_default = match["op"] in ("-", ":-")
            seen[name] = seen.get(name, True) and has_default
    return seen


def _env_example_names() -> list[str]:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    return [m["name"] for line in lines if (m := _ENV_LINE.match(line))]


def _module_file(dotted: str, *, entry: str) -> list[Path]:
    """Files that can provide `dotted`: `<path>.py` or `<path>/<entry>`."""
    path = REPO.joinpath(*dotted.split("."))
    return [path.with_suffix(".py"), path / entry]


# --- the schema --------------------------------------------------------------------------


def test_compose_file_is_valid_against_compose_spec() -> None:
    errors = sorted(_validator().iter_errors(_load_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c.update(bogus_top_level=True), id="bogus-top-level-key"),
        pytest.param(
            lambda c: c["services"]["redis"].update(not_a_field="x"), id="bogus-service-field"
        ),
        pytest.param(
            lambda c: c["services"]["redis"].update(ports={"6379": 6379}), id="wrong-field-type"
        ),
    ],
)
def test_validator_rejects_an_invalid_compose_file(mutate) -> None:
    broken = copy.deepcopy(_load_compose())
    mutate(broken)
    assert not _validator().is_valid(broken)


# --- commands name code that exists ------------------------------------------------------


def test_compose_runs_python_modules_and_gunicorn_apps() -> None:
    assert _python_m_modules(), "no `python -m` service commands found"
    assert _gunicorn_targets(), "no gunicorn service commands found"


@pytest.mark.parametrize(("service", "module"), _python_m_modules())
def test_python_m_command_names_a_runnable_module(service: str, module: str) -> None:
    candidates = _module_file(module, entry="__main__.py")
    assert any(p.is_file() for p in candidates), (
        f"service {service!r} runs `python -m {module}`, but none of "
        f"{[str(p.relative_to(REPO)) for p in candidates]} exists"
    )


@pytest.mark.parametrize(("service", "target"), _gunicorn_targets())
def test_gunicorn_command_names_an_existing_app_factory(service: str, target: str) -> None:
    match = _WSGI_TARGET.match(target)
    assert match, f"service {service!r}: gunicorn target {target!r} is not module:callable"
    candidates = _module_file(match["module"], entry="__init__.py")
    existing = [p for p in candidates if p.is_file()]
    assert existing, (
        f"service {service!r} serves {target!r}, but none of "
        f"{[str(p.relative_to(REPO)) for p in candidates]} exists"
    )
    tree = ast.parse(existing[0].read_text(encoding="utf-8"))
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
    assert match["callable"] in bound, (
        f"service {service!r}: {existing[0].relative_to(REPO)} defines no {match['callable']!r}"
    )


# --- the services' settings --------------------------------------------------------------


def test_redis_persists_and_never_evicts_queued_jobs() -> None:
    argv = _argv(_load_compose()["services"]["redis"]["command"])
    options = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert options.get("--appendonly") == "yes"
    assert options.get("--maxmemory-policy") == "noeviction"


def test_mlflow_can_deliver_webhooks_inside_the_network() -> None:
    env = _environment(_load_compose()["services"]["mlflow"])
    assert env.get("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "").lower() == "true"
    schemes = {s.strip() for s in env.get("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "").split(",")}
    assert {"http", "https"} <= schemes
    # The Fernet key must be set, and must come from the environment, never a default
    # committed here: `${VAR:?…}` refuses to start without it.
    key = env.get("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "")
    assert key.startswith("${MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY:?"), key


def test_every_interpolated_variable_has_a_default_or_is_documented() -> None:
    documented = set(_env_example_names())
    interpolated = _interpolated()
    assert "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" in interpolated
    missing = sorted(
        name
        for name, has_default in interpolated.items()
        if not has_default and name not in documented
    )
    assert not missing, f"in docker-compose.yml without a default or .env.example entry: {missing}"


# --- .env.example ------------------------------------------------------------------------


def test_env_example_documents_each_setting_once_with_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    names = _env_example_names()
    assert names, ".env.example defines no settings"
    duplicated = sorted({name for name in names if names.count(name) > 1})
    assert not duplicated, f"set more than once in .env.example: {duplicated}"
    for i, line in enumerate(lines):
        if _ENV_LINE.match(line):
            assert i > 0 and lines[i - 1].startswith("#"), f"no comment line above {line!r}"


def test_env_example_names_only_settings_the_code_reads() -> None:
    """Each .env.example name is read by the shipped code, or is interpolated by
    docker-compose.yml (a setting of the compose stack itself, like the MLflow Fernet key)."""
    code = "\n".join(path.read_text(encoding="utf-8") for path in SHIPPED_FILES)
    compose_names = set(_interpolated())
    unknown = [
        name
        for name in _env_example_names()
        if name not in compose_names and not re.search(rf"\b{re.escape(name)}\b", code)
    ]
    assert not unknown, f"in .env.example but not mentioned by the shipped code: {unknown}"


def _read_settings(path: Path) -> set[str]:
    """Return the environment variables a module reads with `.get("NAME")` or `getenv`."""
    read = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        first = node.args[0]
        if (
            called in ("get", "getenv")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and _ENV_NAME.match(first.value)
        ):
            read.add(first.value)
    return read


def test_every_setting_the_code_reads_is_in_env_example() -> None:
    read = {name for path in SHIPPED_FILES for name in _read_settings(path)}
    assert {"MLFLOW_TRACKING_URI", "LOG_LEVEL", "WORKER_METRICS_PORT"} <= read
    missing = sorted(read - set(_env_example_names()))
    assert not missing, f"read by the shipped code, not documented in .env.example: {missing}"


# --- hardening -----------------------------------------------------------------------------

APP_SERVICES = ("webhooks", "worker", "scheduler", "bot", "predict")
HEARTBEATS = {"worker": "worker", "scheduler": "scheduler"}  # services without an HTTP port


def test_every_service_says_when_it_is_healthy() -> None:
    services = _load_compose()["services"]
    missing = [name for name, svc in services.items() if "healthcheck" not in svc]
    assert not missing, f"no healthcheck: {missing}"
    for service, beat in HEARTBEATS.items():
        test = services[service]["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", "registry.process.heartbeat", beat, "ready"], test
    for service in ("webhooks", "bot", "predict"):
        (port,) = {str(p).rsplit(":", 1)[-1] for p in services[service]["ports"]}
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(
            services[service]["healthcheck"]["test"]
        )


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_runs_read_only_writing_only_a_tmpfs(service: str) -> None:
    svc = _load_compose()["services"][service]
    assert svc["read_only"] is True
    assert svc["tmpfs"] == ["/tmp"]
    assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]


def test_only_the_doors_are_published_and_mlflow_on_loopback_alone() -> None:
    services = _load_compose()["services"]
    published = {name: [str(p) for p in svc.get("ports", [])] for name, svc in services.items()}
    assert published["redis"] == published["postgres"] == []
    assert published["mlflow"] and all(p.startswith("127.0.0.1:") for p in published["mlflow"])
    argv = _argv(services["predict"]["command"])
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # its own loopback reaches nobody


def test_redis_asks_every_client_for_its_password() -> None:
    compose = _load_compose()
    argv = _argv(compose["services"]["redis"]["command"])
    password = argv[argv.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?"), password
    for service in APP_SERVICES:
        url = _environment(compose["services"][service])["REDIS_URL"]
        assert url.startswith(f"redis://:{password}@redis:"), (service, url)
