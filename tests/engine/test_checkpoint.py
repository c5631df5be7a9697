"""Atomic checkpoints: a crash at any point of a write leaves the previous complete checkpoint loadable."""
import os

import pytest
import torch

from msta.engine import checkpoint as ckpt


def _engine_writer(value):
    def write(folder):
        folder.mkdir(parents=True)
        torch.save({"w": torch.full((3,), float(value))}, folder / "state.pt")
    return write


def _save(run, step, value, keep_last=2, writer=None):
    payload = ckpt.adapter_payload(state_dict={"a": torch.full((2,), float(value))}, config={"x": 1},
                                   class_names=["c"], raw_labels=["c"], templates=["a video of {}."], step=step,
                                   epoch=step)
    return ckpt.save_checkpoint(run, step, write_engine_state=writer or _engine_writer(value), adapters=payload,
                                marker={"step": step, "epoch": step}, rank=0, barrier=lambda: None,
                                keep_last=keep_last)


def test_save_list_prune_and_load(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step, step)
    done = ckpt.list_complete(tmp_path)
    assert [p.name for p in done] == ["step_000002", "step_000003"]  # keep_last=2
    marker = ckpt.read_marker(done[-1])
    assert {k: marker[k] for k in ("step", "epoch")} == {"step": 3, "epoch": 3}
    assert set(marker["files"]) == {"engine/state.pt", "rng_rank0.pt", "adapters/config.json",
                                    "adapters/model.safetensors"}
    assert ckpt.check_checkpoint(done[-1]) is None
    payload = ckpt.load_adapters(done[-1])
    assert payload["format"] == ckpt.ADAPTERS_FORMAT and payload["state_dict"]["a"].tolist() == [3.0, 3.0]
    assert payload["templates"] == ["a video of {}."] and payload["raw_labels"] == ["c"]


def test_crash_during_engine_write_keeps_previous(tmp_path):
    _save(tmp_path, 1, 1)

    def crash(folder):
        _engine_writer(2)(folder)
        (folder / "half.bin").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, 2, writer=crash)
    last = ckpt.find_last_complete(tmp_path)
    assert last.name == "step_000001"
    assert torch.load(last / "engine" / "state.pt")["w"].tolist() == [1.0] * 3
    assert ckpt.load_adapters(last)["step"] == 1
    _save(tmp_path, 3, 3)  # the next save cleans the half-written folder up
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "checkpoints").iterdir())


def test_crash_during_adapter_file_write_keeps_previous_file(tmp_path, monkeypatch):
    path = ckpt.atomic_torch_save({"v": 1}, tmp_path / "best.pt")
    real_save = torch.save

    def partial_save(obj, f, *a, **k):
        f.write(b"garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(OSError):
        ckpt.atomic_torch_save({"v": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_resave_same_step_replaces(tmp_path):
    _save(tmp_path, 1, 1)
    _save(tmp_path, 1, 5)
    assert ckpt.load_adapters(ckpt.find_last_complete(tmp_path))["state_dict"]["a"].tolist() == [5.0, 5.0]


def test_load_adapters_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapters file"):
        ckpt.load_adapters(tmp_path / "best")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an msta adapters file"):
        ckpt.load_adapters(tmp_path / "other.pt")


def test_rng_files_are_data_and_old_ones_still_read(tmp_path):
    import pickle
    import random

    import numpy as np

    path = ckpt.atomic_torch_save(ckpt.rng_state(), tmp_path / "rng_rank0.pt")
    torch.load(path, weights_only=True)  # plain tensors, numbers and strings
    expected = (torch.rand(3), np.random.rand(2), random.random())
    ckpt.set_rng_state(ckpt.load_rng_state(path))
    got = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(expected[0], got[0]) and (expected[1] == got[1]).all() and expected[2] == got[2]

    old = tmp_path / "old_rng.pt"  # as written before: numpy's state tuple and Python's tuple inside
    torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": None}, old)
    expected = np.random.rand(2)
    ckpt.set_rng_state(ckpt.load_rng_state(old))
    assert (np.random.rand(2) == expected).all()

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    crafted = tmp_path / "rng_rank1.pt"
    with open(crafted, "wb") as f:
        pickle.dump({"torch": Exploit()}, f, protocol=2)
    with pytest.raises(ValueError, match=r"rng_rank1\.pt is not an RNG state msta can read as data"):
        ckpt.load_rng_state(crafted)
    assert not (tmp_path / "pwned").exists()
