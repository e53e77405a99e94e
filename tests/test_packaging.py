"""What ships: the wheel and the images hold the services, nothing of devkit/, locked versions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import REPO

SHIPPED = {"registry", "webhooks", "worker", "bot", "gate"}
# Words naming what is for the tests, the bench and `make demo` only, old places included.
NEVER_SHIPPED = ("sandbox", "double", "demo", "devstack", "devkit")
# Left in a working tree by earlier builds and runs: not part of what a clean clone builds.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".hypothesis",
    ".demo",
    "mlruns",
    "node_modules",
)
COPY_PACKAGE = re.compile(r"^COPY\s+(?P<src>[^\s-][^\s]*)\s+\./(?P<dst>[^\s/]+)/?\s*$")
LOCK = REPO / "constraints.txt"
# A line pip takes in a constraints file: `name==version`, maybe `; marker` (no extras, no -e).
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)(\s*;\s*.+)?$")
IMAGES = (REPO / "Dockerfile", REPO / "docker" / "mlflow.Dockerfile")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Build the wheel of a copy of the working tree (so no stale build/ leaks into it)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source, out = tmp / "source", tmp / "wheels"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = out.glob("registry_bot-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def top_levels(archive: zipfile.ZipFile) -> set[str]:
    """Return the wheel's top-level directories other than its .dist-info."""
    tops = {name.split("/", 1)[0] for name in archive.namelist()}
    return {top for top in tops if not top.endswith(".dist-info")}


def pyproject_packages() -> set[str]:
    """Return the top-level packages `[tool.setuptools.packages.find] include` names."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = set()
    for pattern in include:
        top, _, rest = pattern.partition(".")
        # "bot*" would also take any "bot..." directory: only "name" and "name.*" are exact.
        assert re.fullmatch(r"[a-z_]+", top) and rest in ("", "*"), f"loose include {pattern!r}"
        tops.add(top)
    return tops


def dockerfile_packages() -> set[str]:
    """Return the directories the Dockerfile copies as `COPY <pkg> ./<pkg>`."""
    copied = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not line.startswith("COPY"):
            continue
        match = COPY_PACKAGE.match(line)
        if match is None:  # only files go elsewhere: `COPY pyproject.toml README.md ./`
            sources = line.split()[1:-1]
            assert all((REPO / s).is_file() for s in sources), f"copies a directory: {line}"
            continue
        assert match["src"].rstrip("/") == match["dst"], f"copied under another name: {line}"
        assert (REPO / match["dst"]).is_dir(), f"no such directory: {line}"
        copied.add(match["dst"])
    return copied


def test_the_wheel_holds_the_services_and_no_local_stack(wheel):
    names = wheel.namelist()
    assert top_levels(wheel) == SHIPPED
    outside = [
        n
        for n in names
        if n.split("/", 1)[0] not in SHIPPED and not n.split("/", 1)[0].endswith(".dist-info")
    ]
    assert outside == []
    local = [n for n in names if any(word in n.lower() for word in NEVER_SHIPPED)]
    assert local == []
    assert "registry/__init__.py" in names and "bot/app.py" in names


def test_the_wheel_carries_the_license_the_version_and_the_command(wheel):
    import registry

    names = wheel.namelist()
    (info,) = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    assert info == f"registry_bot-{registry.__version__}.dist-info"
    assert wheel.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"Version: {registry.__version__}" in metadata
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "registry-bot = registry.process.cli:run" in entry_points


def test_a_fresh_environment_with_the_wheel_has_a_working_registry_bot_command(wheel, tmp_path):
    import site
    import venv

    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--disable-pip-version-check", str(wheel.filename)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    # Only the wheel is installed here; its dependencies are borrowed from this environment.
    (site_dir,) = (env / "lib").glob("python3*/site-packages")
    (site_dir / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    for args, says in ((["--help"], "check-policy"), (["version"], "registry-bot 0.")):
        done = subprocess.run(
            [str(env / "bin" / "registry-bot"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,  # not the source tree: what runs is what was installed
        )
        assert done.returncode == 0 and says in done.stdout, done.stderr[-2000:]


def test_the_dockerfile_copies_exactly_the_wheels_packages(wheel):
    declared = pyproject_packages()
    assert dockerfile_packages() == declared
    assert top_levels(wheel) == declared


def locked() -> dict[str, list[Version]]:
    """Return each package constraints.txt pins -> its versions (one per Python range)."""
    pins: dict[str, list[Version]] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not a pin pip takes as a constraint: {line!r}"
        pins.setdefault(canonicalize_name(match["name"]), []).append(Version(match["version"]))
    return pins


def declared() -> list[Requirement]:
    """Return every dependency pyproject.toml names: the main ones and each extra's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    return [Requirement(r) for r in [*project["dependencies"], *(r for e in extras for r in e)]]


def test_the_lock_pins_every_declared_dependency_within_its_range():
    pins = locked()
    for requirement in declared():
        versions = pins.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not in constraints.txt: run `make lock`"
        outside = [str(v) for v in versions if v not in requirement.specifier]
        assert not outside, f"constraints.txt pins {requirement.name} {outside}: run `make lock`"
    assert canonicalize_name("registry-bot") not in pins  # the project installs from here


def test_the_lock_keeps_mlflow_whole_and_the_compose_image_on_its_version():
    pins = locked()
    assert pins["mlflow"] == pins["mlflow-skinny"]
    (version,) = pins["mlflow"]
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["mlflow"]["image"] == f"registry-bot-mlflow:{version}"


def test_make_install_takes_the_lock_and_reruns_when_it_changes():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^LOCK := constraints\.txt$", makefile, re.M)
    (stamp_rule,) = re.findall(r"^\$\(STAMP\):.*$", makefile, re.M)
    assert "$(LOCK)" in stamp_rule.split(":", 1)[1]
    # Every install of the project (make install, and make lint's dev extra) is constrained.
    installs = [line for line in makefile.splitlines() if re.search(r"pip install .*-e ", line)]
    assert len(installs) >= 2 and all("-c $(LOCK)" in line for line in installs), installs


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_each_image_installs_with_the_lock(image):
    lines = image.read_text().splitlines()
    copies = [line.split()[1:] for line in lines if line.startswith("COPY")]
    (dst,) = [args[-1] for args in copies if "constraints.txt" in args[:-1]]
    # `COPY … ./` or `COPY … /tmp/` keep the name; `COPY constraints.txt /tmp/x.txt` renames it.
    inside = (dst + "constraints.txt" if dst.endswith("/") else dst).removeprefix("./")
    installs = [line for line in lines if "pip install" in line]
    assert installs, f"{image.name} installs nothing"
    for line in installs:
        assert re.search(rf"\s-c {re.escape(inside)}(\s|$)", line), line
