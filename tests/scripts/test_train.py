"""scripts/train.py: dry runs, config errors, and (slow) multi-process equivalence and kill/resume on loopback.

Tolerance of the multi-process comparisons: gloo sums the gradients of 2 ranks in a different order than one
process sums one batch (ZeRO-3 more differently still), so losses agree to rtol 1e-4 (measured: <= 1e-5
over 12 steps) and adapter weights to atol 1e-2. Adam divides each element's step by that element's own gradient
scale, so an element whose gradient is near its rounding noise moves differently, and the difference grows step
after step. Measured with the deterministic mp4 writer's clips: after ONE step the 2-process ZeRO-3 weights are
within 1.4e-6 of one process (ZeRO-2: 6e-8; no element stepped the other way), after 12 steps 5.3e-5 (ZeRO-2:
4e-6), with L_RD 3.1e-3. A gradient not averaged over the ranks moves elements by 2 x lr = 4e-2 in the first step.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from msta.engine.checkpoint import find_last_complete, load_adapters
from tests.engine.helpers import REPO, TRAIN, env, run_train, tiny_config, write_dataset

sys.path.insert(0, str(REPO / "scripts"))
import train as train_script  # noqa: E402

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_dry_run_prints_param_report(capsys):
    assert train_script.main(["--cfg", str(REPO / "configs" / "fewshot_hmdb.yaml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "trainable params: 1,744,000 / total: 151,364,737 (1.15%)"
    assert any("text.8-12" in line for line in lines[1:]) and any("visual.8-12" in line for line in lines[1:])


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_dry_run_every_shipped_config(path, capsys):
    assert train_script.main(["--cfg", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("trainable params: ")


def test_bad_override_exits_with_suggestion(capsys):
    code = train_script.main(["--cfg", str(REPO / "configs" / "fewshot_hmdb.yaml"), "--opts", "data.shot=4"])
    assert code == 2
    assert "unknown config key 'data.shot'; did you mean 'data.shots'?" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# real runs in subprocesses (slow): 1 process without launcher, 2 processes under torchrun (gloo)


@pytest.fixture(scope="module")
def data_keys(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def _config(tmp: Path, data_keys, **train):
    return tiny_config(tmp, data_keys, train={"out_dir": str(tmp / "run"), **train})


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def _check(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_keys):
    """An uninterrupted 1-process run (micro batch 3 x 2 accumulation = global batch 6), no launcher."""
    tmp = tmp_path_factory.mktemp("reference")
    _check(run_train(_config(tmp, data_keys), tmp))
    return tmp / "run"


def _assert_matches(run: Path, reference: Path, world_size: int) -> None:
    assert _losses(run) == pytest.approx(_losses(reference), rel=1e-4)
    ref, got = load_adapters(reference / "last.pt"), load_adapters(run / "last.pt")
    assert set(ref["state_dict"]) == set(got["state_dict"])
    for k, v in ref["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][k], v, atol=1e-2, rtol=0, msg=k)
    assert json.loads((run / "train_summary.json").read_text())["world_size"] == world_size


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_processes_match_one(stage, tmp_path, data_keys, reference):
    cfg = _config(tmp_path, data_keys, zero_stage=stage, micro_batch=3)  # 3 x 1 accumulation x 2 ranks = 6
    _check(run_train(cfg, tmp_path, nproc=2))
    _assert_matches(tmp_path / "run", reference, world_size=2)


@pytest.mark.slow
def test_deepspeed_launcher_matches_one(tmp_path, data_keys, reference):
    """The same script under the `deepspeed` launcher (which passes --local_rank=N), 2 processes, ZeRO-2."""
    cfg = _config(tmp_path, data_keys, zero_stage=2, micro_batch=3)
    _check(run_train(cfg, tmp_path, nproc=2, launcher="deepspeed"))
    _assert_matches(tmp_path / "run", reference, world_size=2)


@pytest.mark.slow
def test_reference_distillation_two_processes_zero3_match_one(tmp_path, data_keys):
    """loss.distill: each step's references are the same on every rank, and the frozen-teacher forward works under
    ZeRO-3 (its parameters are partitioned like the rest)."""
    refs = tmp_path / "refs.txt"
    refs.write_text("\n".join(f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("square", "circle")))
    loss = {"distill": 1.0, "distill_texts": str(refs), "distill_sample": 3}
    runs = {}
    for name, nproc, train in (("one", 1, {}), ("two", 2, {"zero_stage": 3, "micro_batch": 3})):
        tmp = tmp_path / name
        tmp.mkdir()
        _check(run_train(tiny_config(tmp, data_keys, train={"out_dir": str(tmp / "run"), **train}, loss=loss), tmp,
                         nproc=nproc))
        runs[name] = tmp / "run"
    _assert_matches(runs["two"], runs["one"], world_size=2)
    records = [json.loads(line) for line in (runs["one"] / "metrics.jsonl").read_text().splitlines()]
    rd = [r["loss_rd"] for r in records if r["split"] == "train"]
    assert len(rd) == 12 and all(v > 0 for v in rd[1:])


@pytest.mark.slow
def test_sigkill_then_resume_auto_matches_uninterrupted(tmp_path, data_keys, reference):
    cfg = _config(tmp_path, data_keys)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(TRAIN), "--cfg", str(cfg)], env=env(tmp_path), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while find_last_complete(run) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = find_last_complete(run)
    assert killed_at is not None and not (run / "train_summary.json").exists(), "the run ended before it was killed"
    _check(run_train(cfg, tmp_path, "--resume", "auto"))
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 12
    ref, got = load_adapters(reference / "last.pt"), load_adapters(run / "last.pt")
    for k, v in ref["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][k], v, atol=0, rtol=0, msg=k)
    resumed = _losses(run)  # metrics.jsonl: the killed run's steps up to its checkpoint, then the resumed ones
    assert resumed[-3:] == pytest.approx(_losses(reference)[-3:], rel=1e-6)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, 13))  # one row per step: the replayed steps are not logged twice
