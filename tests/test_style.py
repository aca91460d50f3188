"""The code is formatted and linted by ruff with the project's .ruff.toml (`ruff format .`, `ruff check .`)."""

import subprocess
import sys

from conftest import ROOT


def ruff(*args):
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_formatted():
    res = ruff("format", "--check", ".")
    assert res.returncode == 0, "run `ruff format .`:\n" + res.stdout + res.stderr


def test_lint_clean():
    res = ruff("check", ".")
    assert res.returncode == 0, "run `ruff check --fix .`:\n" + res.stdout + res.stderr
