"""The run folder's rules (msta.engine.run_dir), without training: real folders, real flock, real checkpoints."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from msta.config import load_config
from msta.engine import checkpoint as ckpt
from msta.engine.run_dir import LOCK_FILE, RunDirError, config_diff, open_run_dir
from tests.engine.helpers import REPO, tiny_config

_DATA = {"data": {"dataset": "toy", "root": "videos", "class_table": "classes.csv", "train_list": "train.txt",
                  "test_list": "test.txt"}, "text": {"prompts_dir": "prompts"}}


def _cfg(tmp_path, *overrides):
    path = tmp_path / "tiny.yaml"
    if not path.exists():
        tiny_config(tmp_path, _DATA)
    return load_config(path, list(overrides))


def _engine_writer(value):
    def write(folder):
        folder.mkdir(parents=True)
        torch.save({"w": torch.full((64,), float(value))}, folder / "state.pt")
    return write


def _checkpoint(run, step):
    payload = ckpt.adapter_payload(state_dict={"a": torch.full((2,), float(step))}, config={}, class_names=["c"],
                                   raw_labels=["c"], templates=["a video of {}."], step=step, epoch=step)
    return ckpt.save_checkpoint(run, step, write_engine_state=_engine_writer(step), adapters=payload,
                                marker={"step": step, "epoch": step}, rank=0, barrier=lambda: None, keep_last=0)


def _earlier_run(run, cfg, steps=(1, 2, 3)):
    """A folder as a finished run leaves it: config, metrics of `steps`, checkpoints, last/."""
    opened = open_run_dir(cfg, resume=None)
    opened.release()
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(1, max(steps) + 1):
            f.write(json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) + "\n")
    for s in steps:
        _checkpoint(run, s)
    ckpt.save_adapters(ckpt.load_adapters(ckpt.checkpoint_dir(run, max(steps))), run / "last")


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def test_fresh_run_into_an_earlier_run_is_refused_and_nothing_changes(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    before = _tree(run)
    with pytest.raises(RunDirError) as e:
        open_run_dir(_cfg(tmp_path, "train.seed=7"), resume=None)
    msg = str(e.value)
    assert str(run) in msg and "--resume auto" in msg and "train.out_dir" in msg and "--overwrite" in msg
    assert "step_000003" in msg
    assert _tree(run) == before


def test_overwrite_moves_the_earlier_run_aside(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    before = _tree(run)
    opened = open_run_dir(_cfg(tmp_path, "train.seed=7"), resume=None, overwrite=True)
    try:
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
        assert len(aside) == 1 and _tree(aside[0]) == before  # every byte of the earlier run kept
        assert sorted(p.name for p in run.iterdir()) == ["config.yaml", LOCK_FILE]
        assert load_config(run / "config.yaml").train.seed == 7
        assert any("moved to" in n and str(aside[0]) in n for n in opened.notes)
    finally:
        opened.release()
    with pytest.raises(RunDirError, match="give one"):
        open_run_dir(cfg, resume="auto", overwrite=True)


def test_an_attempt_that_never_trained_is_reused(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: broken\n")
    (run / "train.log").write_text("a config error\n")
    (run / "metrics.jsonl").write_text("")
    open_run_dir(cfg, resume=None).release()
    assert load_config(run / "config.yaml") == cfg


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_dir_that_cannot_be_a_folder(tmp_path, where):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "run"
    with pytest.raises(RunDirError, match=r"train\.out_dir=.*afile"):
        open_run_dir(_cfg(tmp_path, f"train.out_dir={out}"), resume=None)


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from msta.config import load_config
    from msta.engine.run_dir import open_run_dir
    run = open_run_dir(load_config({cfg!r}), resume=None)
    print("locked", flush=True)
    time.sleep(120)
""")


def _hold_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=str(REPO), cfg=str(tmp_path / "tiny.yaml"))],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_is_refused_with_the_holders_pid_and_a_dead_holder_leaves_no_lock(tmp_path):
    cfg = _cfg(tmp_path)
    proc = _hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirError) as e:
            open_run_dir(cfg, resume="auto")
        assert f"pid {proc.pid}" in str(e.value) and "in use by another training run" in str(e.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    opened = open_run_dir(cfg, resume="auto")  # the kernel released the dead holder's lock
    try:
        assert any(f"stale lock of pid {proc.pid}" in n and "no longer running" in n for n in opened.notes)
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):  # even within one process: a second open
            open_run_dir(cfg, resume="auto")
    finally:
        opened.release()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # released: nothing stale for the next run


def test_resume_refuses_a_trajectory_change_unless_allowed_and_keeps_both_configs(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    saved = (run / "config.yaml").read_text()
    with pytest.raises(RunDirError) as e:
        open_run_dir(_cfg(tmp_path, "optim.lr=0.5", "train.batch_size=12", "train.log_every=5"), resume="auto")
    msg = str(e.value)
    assert "optim.lr: 0.02 -> 0.5" in msg and "train.batch_size: 6 -> 12" in msg and "log_every" not in msg
    assert "--allow-config-change" in msg
    assert (run / "config.yaml").read_text() == saved  # never overwritten silently

    opened = open_run_dir(_cfg(tmp_path, "optim.lr=0.5"), resume="auto", allow_config_change=True)
    opened.release()
    assert (run / "config.until-step_000003.yaml").read_text() == saved
    assert load_config(run / "config.yaml").optim.lr == 0.5
    assert any("optim.lr: 0.02 -> 0.5" in n for n in opened.notes)


def test_resume_accepts_harmless_changes_with_a_note(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    opened = open_run_dir(_cfg(tmp_path, "train.log_every=5", "data.num_workers=2", "eval.batch_size=2",
                               "train.max_steps=30"), resume="auto")
    opened.release()
    assert opened.start.name == "step_000003"
    assert any("do not alter training" in n and "train.log_every: 1 -> 5" in n and "data.num_workers: 0 -> 2" in n
               for n in opened.notes)
    assert load_config(run / "config.yaml").train.log_every == 5


def test_config_diff_sorts_keys():
    changing, harmless = config_diff({"optim": {"lr": 1}, "train": {"eval_every": 1}, "eval": {"views": {"clips": 1}}},
                                     {"optim": {"lr": 2}, "train": {"eval_every": 2}, "eval": {"views": {"clips": 2}}})
    assert changing == ["optim.lr: 1 -> 2"]
    assert harmless == ["eval.views.clips: 1 -> 2", "train.eval_every: 1 -> 2"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove_rng"])
def test_resume_auto_falls_back_from_a_damaged_newest_checkpoint(tmp_path, damage):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    newest = ckpt.checkpoint_dir(run, 3)
    victim = newest / ("rng_rank0.pt" if damage == "remove_rng" else "engine/state.pt")
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, one byte of the tensor data changed: only the CRC can tell
        i = data.index(torch.full((64,), 3.0).numpy().tobytes())
        victim.write_bytes(data[:i] + b"\x01" + data[i + 1:])
    else:
        victim.unlink()
    opened = open_run_dir(cfg, resume="auto")
    opened.release()
    assert opened.start == ckpt.checkpoint_dir(run, 2)
    note = next(n for n in opened.notes if "damaged" in n)
    assert str(newest) in note and victim.name in note and f"previous complete checkpoint {opened.start}" in note
    assert (run / "checkpoints" / "damaged-step_000003").is_dir()  # kept for a look, not deleted
    rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2]  # the resumed run writes steps 3.. again: one row per step
    assert [json.loads(line)["step"] for line in (run / "metrics.replaced.jsonl").read_text().splitlines()] == [3]


def test_resume_from_a_damaged_checkpoint_path_names_the_file(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg, steps=(1,))
    victim = ckpt.checkpoint_dir(run, 1) / "engine" / "state.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(RunDirError, match=r"damaged: .*engine/state\.pt: 100 bytes"):
        open_run_dir(cfg, resume=str(ckpt.checkpoint_dir(run, 1)))
    with pytest.raises(RunDirError, match=r"only complete checkpoint .*step_000001 is damaged"):
        open_run_dir(cfg, resume="auto")


def test_stale_temps_of_dead_writers_are_cleaned_and_a_half_swapped_folder_restored(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / f".last.pt.tmp-{dead.pid}").write_bytes(b"half")
    (run / f".best.tmp-{dead.pid}").mkdir()
    os.rename(run / "last", run / f".last.old-{dead.pid}")  # killed between the two renames of a swap
    (run / "checkpoints" / ".tmp-step_000004").mkdir()
    mine = run / f".best.tmp-{os.getpid()}"  # a live writer's temp is left alone
    mine.mkdir()
    opened = open_run_dir(cfg, resume="auto")
    opened.release()
    names = {p.name for p in run.iterdir()}
    assert f".last.pt.tmp-{dead.pid}" not in names and f".best.tmp-{dead.pid}" not in names
    assert "last" in names and ckpt.load_adapters(run / "last")["step"] == 3
    assert not (run / "checkpoints" / ".tmp-step_000004").exists() and mine.is_dir()
    assert sum("removed" in n for n in opened.notes) == 3 and any("restored" in n for n in opened.notes)


def test_resume_restores_last_from_the_checkpoint_when_a_kill_left_it_behind(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    _earlier_run(run, cfg)
    ckpt.save_adapters(ckpt.load_adapters(ckpt.checkpoint_dir(run, 2)), run / "last")  # killed before last/ = 3
    opened = open_run_dir(cfg, resume="auto")
    opened.release()
    assert ckpt.load_adapters(run / "last")["step"] == 3
    assert any("held step 2; restored step 3" in n for n in opened.notes)
