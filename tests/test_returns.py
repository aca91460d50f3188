"""mc_returns against hand-computed episodes."""

import numpy as np
import pytest

from td3bc_pretrain import mc_returns


def test_terminated_episode():
    r = [1.0, 2.0, 3.0]
    R = mc_returns(r, [0, 0, 1], [0, 0, 0], gamma=0.5)
    # R2 = 3, R1 = 2 + .5*3 = 3.5, R0 = 1 + .5*3.5 = 2.75
    np.testing.assert_allclose(R, [2.75, 3.5, 3.0])


def test_truncated_episode_geometric_tail():
    R = mc_returns([1.0, 2.0], [0, 0], [0, 1], gamma=0.5, tail="geometric")
    # R1 = 2 + 2 * .5 / (1 - .5) = 4 (= r_T / (1 - gamma)), R0 = 1 + .5 * 4 = 3
    np.testing.assert_allclose(R, [3.0, 4.0])


def test_truncated_episode_no_tail():
    R = mc_returns([1.0, 2.0], [0, 0], [0, 1], gamma=0.5, tail="none")
    np.testing.assert_allclose(R, [2.0, 2.0])


def test_several_episodes_back_to_back():
    rewards = [1, 1, 1, 5, 2, 2]
    terms = [0, 1, 0, 0, 0, 0]
    truncs = [0, 0, 0, 1, 0, 0]  # last episode ends at the array end, flagged nowhere
    R = mc_returns(rewards, terms, truncs, gamma=0.9, tail="geometric")
    ep1 = [1 + 0.9 * 1, 1]
    t2 = 5 / 0.1  # truncated: r_T / (1 - gamma)
    ep2 = [1 + 0.9 * t2, t2]
    t3 = 2 / 0.1
    ep3 = [2 + 0.9 * t3, t3]  # the last element of the arrays counts as truncated
    np.testing.assert_allclose(R, ep1 + ep2 + ep3, rtol=1e-12)


def test_gamma_one_sums_rewards():
    R = mc_returns([1, 2, 3, 4], [0, 1, 0, 1], [0, 0, 0, 0], gamma=1.0, tail="none")
    np.testing.assert_allclose(R, [3, 2, 7, 4])


def test_gamma_one_geometric_tail_is_an_error():
    with pytest.raises(ValueError, match="gamma < 1"):
        mc_returns([1.0], [0], [1], gamma=1.0, tail="geometric")


def test_terminated_and_truncated_counts_as_terminated():
    R = mc_returns([1.0, 2.0], [0, 1], [0, 1], gamma=0.5, tail="geometric")
    np.testing.assert_allclose(R, [2.0, 2.0])


def test_matches_loop_on_random_long_data():
    rng = np.random.default_rng(0)
    n = 5000
    r = rng.normal(size=n)
    ends = rng.random(n) < 0.01
    term = ends & (rng.random(n) < 0.5)
    trunc = ends & ~term
    gamma = 0.99
    expected = np.zeros(n)
    nxt = 0.0
    for t in reversed(range(n)):
        if term[t]:
            nxt = r[t]
        elif trunc[t] or t == n - 1:
            nxt = r[t] / (1 - gamma)
        else:
            nxt = r[t] + gamma * nxt
        expected[t] = nxt
    np.testing.assert_allclose(mc_returns(r, term, trunc, gamma), expected, rtol=1e-9, atol=1e-9)


def test_unknown_tail():
    with pytest.raises(ValueError, match="unknown tail"):
        mc_returns([1.0], [1], [0], 0.9, tail="exp")
