"""tools/speed_reference.py runs and prints both numbers."""

import re

from conftest import run_script


def test_speed_reference_edac():
    res = run_script(
        ["--algo", "edac", "--num-critics", "2", "--steps", "1", "--obs-dim", "3", "--act-dim", "2"],
        script="tools/speed_reference.py",
    )
    assert res.returncode == 0, res.stderr
    assert re.search(r"straightforward [\d.]+ updates/s, batched [\d.]+ updates/s, ratio [\d.]+x", res.stdout)


def test_speed_reference_td3bc():
    res = run_script(["--algo", "td3bc", "--steps", "3"], script="tools/speed_reference.py")
    assert res.returncode == 0, res.stderr
    assert re.search(r"straightforward [\d.]+ updates/s", res.stdout)
