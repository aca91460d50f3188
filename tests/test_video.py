"""--capture-video in all four scripts and tools/rollout.py --video: offscreen MP4s that decode to the episode."""

import glob
import os
import re

import imageio_ffmpeg
import pytest
from conftest import TINY, flags, run_dir_of, run_script

import utils

SCRIPTS = ["td3bc_pretrain.py", "edac_pretrain.py", "td3bc_cql_pretrain.py", "edac_bc_pretrain.py"]


def frames(path):
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    return meta["size"], sum(1 for _ in reader)


@pytest.mark.parametrize("script", SCRIPTS)
def test_capture_video_writes_the_first_episode_of_every_evaluation(script, minari_root, tmp_path):
    extra = ["--num-critics", "2"] if script.startswith("edac") else []
    common = flags(total_timesteps=40, pretrain_steps=20, eval_freq=20, eval_episodes=1)
    track = ["--track"] if script == "td3bc_pretrain.py" else []
    video = flags(capture_video=True, save_model=True, runs_dir=tmp_path)
    res = run_script(
        [*TINY, *extra, *common, *track, *video],
        script=script,
        env_extra={"MUJOCO_GL": "egl", "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(res.stdout)
    assert sorted(os.listdir(os.path.join(run_dir, "videos"))) == ["update_20.mp4", "update_40.mp4"]
    if script != "td3bc_pretrain.py":
        return
    (media,) = glob.glob(
        os.path.join(run_dir, "wandb", "offline-run-*", "files", "media", "videos", "eval")
    )
    assert len(os.listdir(media)) == 2  # --track: both videos reached wandb as eval/video
    # the checkpoint's actor replayed on the evaluation's first episode: as many frames as its steps + 1 (the start)
    seed = utils.eval_seeds(1, 1)[0]
    roll = run_script(
        [run_dir, "--episodes", "1", "--seed", str(seed), "--data-episodes", "2", "--video"],
        script="tools/rollout.py",
        env_extra={"MUJOCO_GL": "egl"},
    )
    assert roll.returncode == 0, roll.stderr
    steps = int(re.search(r"episode 0: return -?[\d.]+, (\d+) steps", roll.stdout).group(1))
    size, count = frames(os.path.join(run_dir, "videos", "update_40.mp4"))
    assert size == (480, 480) and count == steps + 1
    assert frames(os.path.join(run_dir, "videos", "rollout_update_40.mp4"))[1] == steps + 1


def test_no_offscreen_renderer_is_one_error_naming_the_fix(minari_root, tmp_path):
    res = run_script(
        TINY + flags(total_timesteps=20, pretrain_steps=10, capture_video=True, runs_dir=tmp_path),
        env_extra={"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"},
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "--capture-video: offscreen rendering failed (MUJOCO_GL=osmesa" in res.stderr
    assert "MUJOCO_GL=egl" in res.stderr and "libegl1" in res.stderr
