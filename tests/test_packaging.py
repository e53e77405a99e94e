"""What ships: the wheel and the Docker image hold the services and nothing of devkit/."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.support import REPO

SHIPPED = {"registry", "webhooks", "worker", "bot"}
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


def test_the_dockerfile_copies_exactly_the_wheels_packages(wheel):
    declared = pyproject_packages()
    assert dockerfile_packages() == declared
    assert top_levels(wheel) == declared
