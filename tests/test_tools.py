"""tools/speed_reference.py: the CORL-structured reference loops run and print their speed."""

import re

from conftest import run_script


def test_reference_edac():
    res = run_script(["--algo", "edac", "--num-critics", "2", "--steps", "1", "--obs-dim", "3", "--act-dim", "2"], script="tools/speed_reference.py")
    assert res.returncode == 0, res.stderr
    assert re.search(r"CORL-structured EDAC \(N=2, no LayerNorm, 256x3, eager fp32\): [\d.]+ updates/s", res.stdout)


def test_reference_td3bc_with_and_without_layernorm():
    for flags, name in (([], "no LayerNorm"), (["--layernorm"], "LayerNorm")):
        res = run_script(["--algo", "td3bc", "--steps", "3", *flags], script="tools/speed_reference.py")
        assert res.returncode == 0, res.stderr
        assert re.search(rf"CORL-structured TD3\+BC \({name}, 256x2, eager fp32\): [\d.]+ updates/s", res.stdout)


def test_reference_edac_update_trains_the_critics():
    """The reference does the work it claims: critics, actor and alpha all change in one update."""
    import os
    import sys

    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import speed_reference as R

    torch.manual_seed(0)
    agent, buffer = R.EDACReference(3, 2, n=3), R.Buffer(100, 3, 2)
    before = [p.detach().clone() for p in (*agent.critic.parameters(), *agent.actor.parameters(), agent.log_alpha)]
    agent.train(buffer.sample(8))
    after = [*agent.critic.parameters(), *agent.actor.parameters(), agent.log_alpha]
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    # sum_{i != j} cos = |sum of unit gradients|^2 - N, so the term lies in [-N / (N - 1), N]
    assert -1.5 <= agent.diversity(*buffer.sample(8)[:2]).item() <= 3
