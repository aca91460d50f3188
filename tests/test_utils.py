"""utils.py: names, errors, flattening at episode boundaries, scores, evaluation, summaries;
tools/build_random.py."""

import io
import os
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_script

import td3bc_pretrain
import utils
from tools.build_random import build_random_dataset


def make_dataset(dataset_id, episodes, ref=None):
    """A Hopper-v5 shaped dataset from hand-made episodes: list of (T, terminated)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers, k = [], 0
    for i, (T, terminated) in enumerate(episodes):
        obs = np.arange(k, k + T + 1, dtype=np.float64)[:, None].repeat(
            11, 1
        )  # row t holds its global index
        k += T + 1
        te = np.zeros(T, bool)
        te[-1] = terminated
        tr = np.zeros(T, bool)
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs,
                actions=np.full((T, 3), 0.5, np.float32),
                rewards=np.arange(T, dtype=np.float64),
                terminations=te,
                truncations=tr,
                infos={},
            )
        )
    kwargs = {} if ref is None else {"ref_min_score": ref[0], "ref_max_score": ref[1]}
    return minari.create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5", **kwargs)


def test_short_names_resolve():
    assert utils.resolve_dataset_id("hopper-medium") == "mujoco/hopper/medium-v0"
    assert utils.resolve_dataset_id("pen-human") == "D4RL/pen/human-v2"
    assert utils.resolve_dataset_id("door-cloned") == "D4RL/door/cloned-v2"
    assert utils.resolve_dataset_id("walker2d-expert") == "mujoco/walker2d/expert-v0"
    assert utils.resolve_dataset_id("hopper-random") == "local/hopper/random-v0"
    assert utils.resolve_dataset_id("local/hopper/medium-v0") == "local/hopper/medium-v0"


def test_unknown_short_name_lists_known_ones():
    with pytest.raises(utils.DatasetError) as e:
        utils.resolve_dataset_id("hopper-mediun")
    msg = str(e.value)
    assert "unknown env id 'hopper-mediun': did you mean 'hopper-medium'?" in msg
    assert "pen-human" in msg and "relocate-cloned" in msg  # the known names
    with pytest.raises(utils.DatasetError) as e:
        utils.resolve_dataset_id("qqq")
    assert "did you mean" not in str(e.value)  # no near miss, no guess


def test_missing_dataset_explains_fix(minari_root, monkeypatch):
    import minari

    def offline(dataset_id, *a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(minari, "download_dataset", offline)
    monkeypatch.setattr(utils.socket, "create_connection", lambda *a, **k: io.BytesIO())
    with pytest.raises(utils.DatasetError) as e:
        utils.load_dataset("halfcheetah-medium")
    msg = str(e.value)
    assert "mujoco/halfcheetah/medium-v0" in msg
    assert os.path.join(minari_root, "mujoco/halfcheetah/medium-v0") in msg  # the path searched
    assert "ConnectionError: no network" in msg  # the underlying error
    assert "minari download mujoco/halfcheetah/medium-v0" in msg and "MINARI_DATASETS_PATH" in msg


def test_no_network_fails_before_minaris_retries(minari_root, monkeypatch):
    import minari

    def unreachable(address, timeout):
        assert address == ("huggingface.co", 443) and timeout <= 5
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(utils.socket, "create_connection", unreachable)
    monkeypatch.setattr(minari, "download_dataset", lambda *a: pytest.fail("retried offline"))
    with pytest.raises(utils.DatasetError, match="could not be downloaded .OSError: Name or"):
        utils.load_dataset("hopper-medium")


def test_missing_random_dataset_says_how_to_build(minari_root):
    with pytest.raises(utils.DatasetError, match="python tools/build_random.py walker2d"):
        utils.load_dataset("walker2d-random")


def test_flatten_boundaries(minari_root):
    ds = make_dataset("test/hopper/flat-v0", [(3, True), (2, False), (4, False)])
    d = utils.flatten_dataset(ds)
    assert d["observations"].shape == (9, 11) and d["next_observations"].shape == (9, 11)
    assert all(v.dtype == np.float32 for v in d.values())
    # observation row t of an episode starting at global row k holds k + t; T + 1 rows per episode
    np.testing.assert_array_equal(d["observations"][:, 0], [0, 1, 2, 4, 5, 7, 8, 9, 10])
    np.testing.assert_array_equal(d["next_observations"][:, 0], [1, 2, 3, 5, 6, 8, 9, 10, 11])
    np.testing.assert_array_equal(d["terminations"], [0, 0, 1, 0, 0, 0, 0, 0, 0])
    # the last step of every episode that did not terminate is truncated
    np.testing.assert_array_equal(d["truncations"], [0, 0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(d["rewards"], [0, 1, 2, 0, 1, 0, 1, 2, 3])


def test_reference_scores_metadata_then_table_then_none(minari_root):
    with_meta = make_dataset("test/hopper/meta-v0", [(2, True)], ref=(-1.0, 9.0))
    assert utils.reference_scores(with_meta) == (-1.0, 9.0)
    no_meta = make_dataset("test/hopper/nometa-v0", [(2, True)])
    assert utils.reference_scores(no_meta) == (-20.272305, 3234.3)  # D4RL's hopper entry
    unknown = make_dataset("test/thing/nometa-v0", [(2, True)])
    assert utils.reference_scores(unknown) is None
    assert np.isnan(utils.normalized_score([1.0], None)).all()


def test_normalized_score():
    np.testing.assert_allclose(
        utils.normalized_score([0.0, 5.0, 10.0], (0.0, 10.0)), [0.0, 50.0, 100.0]
    )
    np.testing.assert_allclose(
        utils.normalized_score([-20.272305], utils.TASKS["hopper"][2]), [0.0], atol=1e-9
    )


def test_paper_protocol_scores_and_time_limit(minari_root):
    pen = make_dataset("test/pen/proto-v0", [(2, True)])  # task read from the id
    assert utils.reference_scores(pen, "paper") == (-162.09, 3076.8331)
    assert utils.reference_scores(pen, "d4rl") == (96.262799, 3076.8331)
    assert utils.eval_time_limit(pen, "paper") == 100
    assert utils.eval_time_limit(pen, "d4rl") == 100  # D4RL's, whatever the dataset's eval env says
    assert utils.eval_time_limit(make_dataset("test/door/proto-v0", [(2, True)]), "d4rl") == 200
    hopper = utils.load_dataset("hopper-random")
    assert utils.eval_time_limit(hopper, "paper") is None  # MuJoCo tasks keep D4RL's protocol
    assert (
        utils.eval_time_limit(hopper, "d4rl") is None and utils.dataset_time_limit(hopper) == 1000
    )
    with pytest.raises(ValueError, match="unknown eval protocol"):
        utils.eval_time_limit(hopper, "fast")


def test_evaluate_parallel_seeded_and_normalized(minari_root):
    ds = utils.load_dataset("hopper-random")
    envs = utils.make_eval_envs(ds, SimpleNamespace(eval_protocol="d4rl", eval_episodes=3))
    assert envs.envs[0].spec.max_episode_steps == 1000  # the dataset's eval env
    seen = []

    def policy(obs):
        seen.append(obs.copy())
        return np.zeros((obs.shape[0], 3), np.float32)

    r1, s1 = utils.evaluate(policy, envs, [1, 2, 3], utils.reference_scores(ds))
    first_obs = seen[0]
    r2, _ = utils.evaluate(policy, envs, [1, 2, 3], utils.reference_scores(ds))
    r3, _ = utils.evaluate(policy, envs, [4, 5, 6], utils.reference_scores(ds))
    np.testing.assert_array_equal(r1, r2)  # reproducible
    assert len(set(np.round(r1, 6))) == 3  # seeds differ per episode
    assert not np.array_equal(r1, r3)
    np.testing.assert_allclose(s1, 100 * (r1 + 20.272305) / (3234.3 + 20.272305))
    assert np.all(
        np.abs(first_obs[:, 0] - 1.25) < 0.01
    )  # raw observations: Hopper starts at z=1.25


@pytest.mark.slow
def test_build_random_cli(tmp_path):
    root = str(tmp_path / "root")
    res = run_script(
        ["hopper", "--steps", "300", "--seed", "3"],
        script="tools/build_random.py",
        env_extra={"MINARI_DATASETS_PATH": root},
    )
    assert res.returncode == 0, res.stderr
    assert (
        f"wrote local/hopper/random-v0 to {os.path.join(root, 'local/hopper/random-v0')}"
        in res.stdout
    )
    assert "--env-id hopper-random" in res.stdout
    again = run_script(
        ["hopper", "--steps", "300"],
        script="tools/build_random.py",
        env_extra={"MINARI_DATASETS_PATH": root},
    )
    assert "already exists" in again.stdout
    import minari

    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = root
    try:
        ds = minari.load_dataset("local/hopper/random-v0")
        assert ds.total_steps >= 300
        assert ds.storage.metadata["ref_min_score"] == utils.TASKS["hopper"][2][0]
        assert ds.recover_environment(eval_env=True).spec.max_episode_steps == 1000
        d = utils.flatten_dataset(ds)
        assert (
            np.all(np.abs(d["actions"]) <= 1.0) and d["actions"].std() > 0.4
        )  # uniform on [-1, 1]
    finally:
        os.environ["MINARI_DATASETS_PATH"] = old


def test_build_random_is_seeded(tmp_path, monkeypatch):
    import minari

    arrays = []
    for i in range(2):
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / f"r{i}"))
        build_random_dataset("hopper", steps=200, seed=7)
        arrays.append(utils.flatten_dataset(minari.load_dataset("local/hopper/random-v0")))
    for key in arrays[0]:
        np.testing.assert_array_equal(arrays[0][key], arrays[1][key])


@pytest.mark.slow
def test_list_command():
    res = run_script(["--list"], script="tools/build_random.py")
    assert res.returncode == 0
    assert "hopper-medium" in res.stdout and "mujoco/hopper/medium-v0" in res.stdout


def test_summarize_run_window_mean(tmp_path):
    rows = "update,phase,wall_s,train_s,updates_per_s,return_mean,return_std,normalized_mean,normalized_std\n"
    for update, score in ((100, 10.0), (200, 20.0), (300, 40.0), (400, 90.0)):
        rows += f"{update},finetune,1,1,1,{score * 3},0,{score},0\n"
    (tmp_path / "eval.csv").write_text(rows)
    summary = utils.summarize_run(str(tmp_path), (200, 300))
    assert (
        summary["window_normalized"] == 30.0 and summary["window_evaluations"] == 2
    )  # ends included
    assert summary["last_eval_update"] == 400 and summary["last_eval_normalized"] == 90.0
    written = (tmp_path / "summary.csv").read_text().splitlines()
    assert written[0].split(",")[-1] == "window_normalized" and written[1].split(",")[-1] == "30.0"
    assert "window_normalized" not in utils.summarize_run(str(tmp_path), None)
    assert utils.window_score([100, 200], [1.0, 3.0], (0, 1000)) == 2.0
    assert np.isnan(utils.window_score([100, 200], [1.0, 3.0], (300, 400)))


def test_budget_and_window_defaults():
    pen = utils.fill_defaults(td3bc_pretrain.Args(env_id="pen-human"), "pen")
    assert (pen.total_timesteps, pen.pretrain_steps, pen.score_window) == (
        300_000,
        200_000,
        (200_000, 300_000),
    )
    assert pen.pretrain_max_steps == 300_000  # twice the pretraining, within the total
    hopper = utils.fill_defaults(td3bc_pretrain.Args(total_timesteps=60_000), "hopper", alpha=7.0)
    assert (hopper.total_timesteps, hopper.pretrain_steps, hopper.score_window) == (
        60_000,
        50_000,
        None,
    )
    assert hopper.pretrain_max_steps == 60_000 and hopper.alpha == 7.0
    assert (
        utils.fill_defaults(td3bc_pretrain.Args(alpha=1.0), "hopper", alpha=7.0).alpha == 1.0
    )  # set wins


def test_adroit_scores_use_d4rls_time_limit(tmp_path, monkeypatch, capsys):
    """Minari's D4RL/pen sets evaluate for 200 steps, D4RL's reference scores were measured at 100: the d4rl
    protocol evaluates pen for 100 steps whatever the dataset's eval env says, and the header says so."""
    import gymnasium as gym
    import gymnasium_robotics
    import minari
    from minari.data_collector import EpisodeBuffer

    gym.register_envs(gymnasium_robotics)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env, eval_env = (gym.make("AdroitHandPen-v1", max_episode_steps=n) for n in (100, 200))
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    o, a, r = [obs], [], []
    for _ in range(5):
        a.append(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        obs, reward, *_ = env.step(a[-1])
        o.append(obs), r.append(reward)
    episode = EpisodeBuffer(
        id=0,
        observations=np.asarray(o),
        actions=np.asarray(a),
        rewards=np.asarray(r),
        terminations=np.zeros(5, bool),
        truncations=np.eye(5, dtype=bool)[-1],
        infos={},
    )
    ds = minari.create_dataset_from_buffers(
        "test/pen/long-eval-v0", [episode], env=env, eval_env=eval_env
    )
    assert utils.dataset_time_limit(ds) == 200 and utils.eval_time_limit(ds, "d4rl") == 100
    args = td3bc_pretrain.Args(
        env_id="test/pen/long-eval-v0", runs_dir=str(tmp_path / "runs"), batch_size=2
    )
    utils.start_run(args, "td3bc_pretrain.py")
    out = capsys.readouterr().out
    assert (
        "evaluation (d4rl protocol): episodes of at most 100 steps; reference scores random 96.262799"
        in out
    )
    assert "the dataset's eval env stops episodes at 200 steps: overridden (d4rl protocol)" in out
    envs = utils.make_eval_envs(ds, args, 1)
    envs.reset(seed=0)
    for steps in range(1, 300):
        *_, term, trunc, _ = envs.step(np.zeros((1, 24), np.float32))
        if term[0] or trunc[0]:
            break
    assert steps == 100
