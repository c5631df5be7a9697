"""Never lose a run (issue 14 items 1-5, issue 13 item 5) through the real scripts/train.py, 1 and 2 processes.

Each test feeds one kind of trouble (a reused folder, a second run, a changed config on resume, a damaged newest
checkpoint, an infinite learning rate, a loss that becomes NaN) and asserts the message (naming the folder, file,
key or step) and that nothing was lost (the earlier run's bytes, the last good checkpoint and adapters).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from msta.engine.checkpoint import (check_checkpoint, checkpoint_dir, find_last_complete, list_complete, load_adapters,
                                    read_marker)
from tests.engine.helpers import REPO, env, run_train, tiny_config, write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_keys(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def _config(tmp: Path, data_keys, **train) -> Path:
    return tiny_config(tmp, data_keys, train={"out_dir": str(tmp / "run"), **train})


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]


def _one_error(proc: subprocess.CompletedProcess, *needles: str, launcher: bool = False) -> str:
    """Exit 2 (under torchrun: its workers exit 2), one `error:` line naming `needles`, no msta traceback."""
    err = proc.stderr
    if launcher:
        assert proc.returncode != 0, err[-4000:]
        # the first worker to end exits 2; torchrun may SIGTERM (-15) the other before it reports its own 2
        codes = {int(c) for c in re.findall(r"exitcode\s*: (-?\d+)", err)}
        assert 2 in codes and codes <= {2, -15}, err[-4000:]
    else:
        assert proc.returncode == 2, (proc.returncode, err[-4000:])
        assert "Traceback" not in err, err[-4000:]
    assert f'File "{REPO / "msta"}' not in err, err[-4000:]  # torchrun's report of its workers is its own
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-4000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "train.lock"}


def _train_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["split"] == "train"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_keys):
    """A finished 12-step run (checkpoints at steps 9 and 12), copied by the tests that change it."""
    tmp = tmp_path_factory.mktemp("finished")
    _ok(run_train(_config(tmp, data_keys), tmp))
    return tmp


def _copy_run(finished: Path, tmp: Path, data_keys, **train) -> Path:
    import shutil

    shutil.copytree(finished / "run", tmp / "run")
    return _config(tmp, data_keys, **train)


def test_fresh_run_into_an_earlier_run_is_refused_and_overwrite_moves_it_aside(finished, tmp_path, data_keys):
    cfg = _copy_run(finished, tmp_path, data_keys)
    run = tmp_path / "run"
    before = _digest(run)
    err = _one_error(run_train(cfg, tmp_path, "--opts", "train.seed=5"), str(run), "--resume auto",
                     "train.out_dir", "--overwrite")
    assert "holds an earlier run" in err
    assert _digest(run) == before  # not a byte changed: metrics not appended, adapters not replaced

    _ok(run_train(cfg, tmp_path, "--overwrite", "--opts", "train.max_steps=3"))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and _digest(aside[0]) == before
    assert _train_steps(run) == [1, 2, 3] and find_last_complete(run).name == "step_000003"
    assert "moved to" in (run / "train.log").read_text()


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from msta.config import load_config
    from msta.engine.run_dir import open_run_dir
    held = open_run_dir(load_config({cfg!r}), resume=None)
    print("locked", flush=True)
    time.sleep(300)
""")


@pytest.mark.distributed
def test_second_run_on_a_locked_folder_is_refused_on_every_rank(tmp_path, data_keys):
    cfg = _config(tmp_path, data_keys)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=str(REPO), cfg=str(cfg))],
                              stdout=subprocess.PIPE, text=True, env=env(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.time()
        proc = run_train(cfg, tmp_path, nproc=2, timeout=240)
        err = _one_error(proc, f"pid {holder.pid}", "in use by another training run", "train.out_dir",
                         launcher=True)
        assert err.count("error:") == 1 and time.time() - start < 200  # both ranks ended, nobody waited
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "train.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _ok(run_train(cfg, tmp_path, "--opts", "train.max_steps=3"))  # the dead holder's lock went with it
    assert f"stale lock of pid {holder.pid}" in (tmp_path / "run" / "train.log").read_text()


def test_resume_with_a_changed_schedule_is_refused_and_harmless_changes_pass(finished, tmp_path, data_keys):
    cfg = _copy_run(finished, tmp_path, data_keys)
    run = tmp_path / "run"
    saved = (run / "config.yaml").read_text()
    _one_error(run_train(cfg, tmp_path, "--resume", "auto", "--opts", "train.batch_size=12", "optim.epochs=8"),
               "train.batch_size: 6 -> 12", "optim.epochs: 4 -> 8", "--allow-config-change", "config.yaml")
    assert (run / "config.yaml").read_text() == saved

    _ok(run_train(cfg, tmp_path, "--resume", "auto", "--opts", "train.log_every=4", "data.num_workers=1"))
    log = (run / "train.log").read_text()
    assert "do not alter training" in log and "train.log_every: 1 -> 4" in log
    assert _train_steps(run) == list(range(1, 13))  # resumed at the end: nothing to repeat, nothing repeated


def test_resume_auto_skips_a_truncated_newest_state_and_logs_one_row_per_step(finished, tmp_path, data_keys):
    cfg = _copy_run(finished, tmp_path, data_keys)
    run = tmp_path / "run"
    newest = checkpoint_dir(run, 12)
    victim = next(newest.glob("engine/state/*model_states.pt"))
    victim.write_bytes(victim.read_bytes()[:1000])
    (run / "train_summary.json").unlink()  # as if killed after the last checkpoint
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = run / f".last.tmp-{dead.pid}"
    stray.mkdir()
    proc = run_train(cfg, tmp_path, "--resume", "auto")
    _ok(proc)
    log = (run / "train.log").read_text()
    assert f"checkpoint {newest} is damaged: engine/state/{victim.name}" in log
    assert f"falling back to the previous complete checkpoint {checkpoint_dir(run, 9)}" in log
    assert "resumed from" in log and "at step 9" in log
    assert _train_steps(run) == list(range(1, 13))  # steps 10-12 once, not twice
    assert len((run / "metrics.replaced.jsonl").read_text().splitlines()) >= 3
    assert not stray.exists() and (run / "checkpoints" / "damaged-step_000012").is_dir()
    assert read_marker(find_last_complete(run))["step"] == 12


def test_infinite_learning_rate_stops_at_step_one_without_saving(tmp_path, data_keys):
    cfg = _config(tmp_path, data_keys)
    err = _one_error(run_train(cfg, tmp_path, "--opts", "optim.lr=inf"), "step 1", "learning rate is inf",
                     "optim.lr")
    assert "no checkpoint had been written yet" in err
    run = tmp_path / "run"
    assert not (run / "last").exists() and not (run / "best").exists() and list_complete(run) == []


@pytest.mark.distributed
def test_nan_loss_under_two_process_deepspeed_stops_every_rank_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                                                    data_keys):
    cfg = _config(tmp_path, data_keys, zero_stage=2, micro_batch=3)
    run = tmp_path / "run"
    _ok(run_train(cfg, tmp_path, "--opts", "train.max_steps=3", nproc=2))
    good = load_adapters(run / "last")
    before = _digest(run / "last")
    # a learning rate so large that the weights overflow after one step: the next loss is not finite
    proc = run_train(cfg, tmp_path, "--resume", "auto", "--allow-config-change", "--opts", "optim.lr=1e30",
                     "optim.min_lr=0", nproc=2, timeout=240)
    err = _one_error(proc, "not finite", "optim.lr", str(checkpoint_dir(run, 3)), launcher=True)
    assert "step 4" in err or "step 5" in err
    assert _digest(run / "last") == before and find_last_complete(run).name == "step_000003"
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values())
    assert max(_train_steps(run)) < 6  # stopped at once, and no row for the bad step's loss as if it were fine


@pytest.fixture
def tmpfs(tmp_path):
    """A mount point for a small tmpfs (root only: CI containers run as root; skipped elsewhere)."""
    mounts = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_during_training_names_the_file_keeps_the_last_checkpoint_and_resumes(tmp_path, data_keys,
                                                                                          tmpfs):
    # a checkpoint is ~320 KB and an adapters folder ~70 KB: step 3's files fit, step 6's do not all fit
    small = tmpfs(tmp_path / "small", "size=800k")
    cfg = tiny_config(tmp_path, data_keys, train={"out_dir": str(small / "run"), "max_steps": 6})
    run = small / "run"
    err = _one_error(run_train(cfg, tmp_path), "no space left while writing", str(run), "--resume auto")
    assert "inline_container" not in err.split("(")[0] and "basic_ios" not in err.split("(")[0]
    done = list_complete(run)
    assert done[0].name == "step_000003" and all(check_checkpoint(d) is None for d in done)
    assert load_adapters(run / "last")["step"] in (3, 6) and load_adapters(run / "best")["step"] in (3, 6)
    assert [p.name for p in run.rglob("*") if ".tmp" in p.name or ".old-" in p.name] == []
    subprocess.run(["mount", "-o", "remount,size=4m", str(small)], check=True)  # the user frees space
    _ok(run_train(cfg, tmp_path, "--resume", "auto"))
    assert _train_steps(run) == [1, 2, 3, 4, 5, 6] and load_adapters(run / "last")["step"] == 6
    assert read_marker(find_last_complete(run))["step"] == 6


def test_read_only_cache_does_not_stop_training(tmp_path, data_keys, tmpfs):
    cache = tmpfs(tmp_path / "cache", "ro,size=64k")
    cfg = _config(tmp_path, data_keys, max_steps=3)
    _ok(run_train(cfg, tmp_path, extra_env={"MSTA_CACHE_DIR": str(cache)}))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "going on without the cache" in log and str(cache) in log
