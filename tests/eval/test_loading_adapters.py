"""Adapters files are data: the Hugging Face folder layout (model.safetensors + config.json), every place it can
come from (a folder, run/best and run/best.pt, a checkpoint step folder, a Hub cache entry, an hf-hub: id against a
pre-filled cache), old .pt files read only as data, and one clear message for anything else."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msta import adapters_io as A
from msta.config import ExperimentCfg, ModelCfg, config_to_dict


def _payload(seed: int = 0, **kw) -> dict:
    g = torch.Generator().manual_seed(seed)
    cfg = ExperimentCfg(model=ModelCfg(name="msta-tiny", pretrained="synthetic-tag"))
    state = {"msta.text.down.weight": torch.randn(8, 16, generator=g), "msta.vision.scale": torch.randn(3, generator=g)}
    return A.adapter_payload(state_dict=state, config=config_to_dict(cfg), class_names=["juggling", "knitting"],
                             raw_labels=["juggle", "knit"], templates=["a video of {}."], step=12, epoch=3,
                             metrics={"val_top1": 61.5, "selected_on": "val"}, **kw)


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_folder_round_trip_and_config_json(tmp_path):
    payload = _payload()
    folder = A.save_adapters(payload, tmp_path / "run" / "best")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in folder.parent.iterdir()] == ["best"]           # no temporary folder left
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "msta-adapters" and meta["format_version"] == A.FORMAT_VERSION
    assert meta["base_model"] == {"name": "msta-tiny", "pretrained": "synthetic-tag", "num_frames": 8}
    assert meta["adapter_config"]["msta"]["dim"] == 128 and "st_adapter" in meta["adapter_config"]
    assert meta["run_config"] == payload["config"]
    assert (meta["class_names"], meta["raw_labels"], meta["templates"]) == (["juggling", "knitting"],
                                                                            ["juggle", "knit"], ["a video of {}."])
    assert (meta["step"], meta["epoch"], meta["metrics"]["val_top1"]) == (12, 3, 61.5)
    # the weights are a plain safetensors file any tool reads
    from safetensors.torch import load_file
    _same(load_file(folder / "model.safetensors"), payload["state_dict"])

    got = A.load_adapters(folder)
    _same(got["state_dict"], payload["state_dict"])
    assert {k: got[k] for k in ("config", "class_names", "raw_labels", "templates", "step", "epoch", "metrics")} \
        == {k: payload[k] for k in ("config", "class_names", "raw_labels", "templates", "step", "epoch", "metrics")}
    # a file inside the folder names the folder
    _same(A.load_adapters(folder / "config.json")["state_dict"], payload["state_dict"])


def test_save_replaces_a_folder_in_place(tmp_path):
    A.save_adapters(_payload(seed=1), tmp_path / "best")
    A.save_adapters(_payload(seed=2), tmp_path / "best")
    _same(A.load_adapters(tmp_path / "best")["state_dict"], _payload(seed=2)["state_dict"])
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_interrupted_swap_falls_back_to_the_folder_set_aside(tmp_path, caplog):
    """A crash between save_adapters' two renames leaves only `.best.old-PID`: it is complete and is used."""
    A.save_adapters(_payload(seed=3), tmp_path / "best")
    os.replace(tmp_path / "best", tmp_path / ".best.old-4242")
    with caplog.at_level(logging.WARNING, logger="msta.adapters_io"):
        got = A.load_adapters(tmp_path / "best")
    _same(got["state_dict"], _payload(seed=3)["state_dict"])
    assert ".best.old-4242" in caplog.text


def test_leftovers_of_dead_writers_are_removed_on_the_next_save(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                  # a pid that no longer runs
    A.save_adapters(_payload(seed=1), tmp_path / f".best.old-{dead.pid}")
    (tmp_path / f".best.tmp-{dead.pid}").mkdir()
    (tmp_path / f".best.tmp-{os.getppid()}").mkdir()             # a live writer's: kept
    A.save_adapters(_payload(seed=2), tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".best.tmp-{os.getppid()}", "best"]


def test_old_and_new_names_resolve_both_ways(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    A.save_adapters(_payload(seed=1), new / "best")
    # `run/best.pt` in an old command line finds the folder of a new run
    assert A.resolve_adapters(new / "best.pt") == new / "best"
    # `run/best` finds the .pt of an old run (read as data)
    old.mkdir()
    torch.save(_payload(seed=2), old / "best.pt")
    assert A.resolve_adapters(old / "best") == old / "best.pt"
    _same(A.load_adapters(old / "best")["state_dict"], _payload(seed=2)["state_dict"])
    # checkpoint step folders: new (adapters/) and old (adapters.pt)
    A.save_adapters(_payload(seed=4), new / "checkpoints" / "step_000004" / "adapters")
    _same(A.load_adapters(new / "checkpoints" / "step_000004")["state_dict"], _payload(seed=4)["state_dict"])
    (old / "checkpoints" / "step_000002").mkdir(parents=True)
    torch.save(_payload(seed=5), old / "checkpoints" / "step_000002" / "adapters.pt")
    _same(A.load_adapters(old / "checkpoints" / "step_000002")["state_dict"], _payload(seed=5)["state_dict"])
    # a legacy file converts to a folder
    A.convert_legacy(old / "best.pt", old / "converted")
    _same(A.load_adapters(old / "converted")["state_dict"], _payload(seed=2)["state_dict"])


def test_missing_and_run_folder_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no adapters file at .*nothing.*tried"):
        A.load_adapters(tmp_path / "nothing")
    A.save_adapters(_payload(), tmp_path / "run" / "best")
    with pytest.raises(FileNotFoundError, match=r"this is a run folder: give .*run/best"):
        A.load_adapters(tmp_path / "run")


class _Evil:
    """Unpickling this creates a file: what a crafted .pt could do with any other callable."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "best.pt"
    torch.save({**_payload(), "metrics": {"x": _Evil(marker)}}, evil)
    # the control: a full unpickling really would run it
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(A.AdaptersFileError, match=r"best\.pt refused: .*could run code"):
        A.load_adapters(evil)
    assert not marker.exists()
    # through every entry point: the eval loader and the engine's loader
    from msta.engine.checkpoint import load_adapters
    from msta.eval.loading import read_checkpoint
    for read in (read_checkpoint, load_adapters):
        with pytest.raises(ValueError, match="refused"):
            read(tmp_path / "best")
    assert not marker.exists()


def test_truncated_or_empty_files_are_not_valid_adapters_files(tmp_path):
    legacy = tmp_path / "best.pt"
    torch.save(_payload(), legacy)
    legacy.write_bytes(legacy.read_bytes()[:200])
    with pytest.raises(A.AdaptersFileError, match=r"best\.pt is not a valid adapters file"):
        A.load_adapters(legacy)
    torch.save({"format": A.ADAPTERS_FORMAT, "config": {}}, tmp_path / "nostate.pt")
    with pytest.raises(A.AdaptersFileError, match=r"nostate\.pt is not a valid adapters file: .*no state dict"):
        A.load_adapters(tmp_path / "nostate.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(A.AdaptersFileError, match=r"empty\.pt is not a valid adapters file"):
        A.load_adapters(tmp_path / "empty.pt")

    folder = A.save_adapters(_payload(), tmp_path / "last")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(A.AdaptersFileError, match=r"last/model\.safetensors is not a valid adapters file: .*sha256"):
        A.load_adapters(folder)
    # without the checksum the truncated safetensors itself is caught
    meta = json.loads((folder / "config.json").read_text())
    meta.pop("weights_sha256")
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(A.AdaptersFileError, match=r"model\.safetensors is not a valid adapters file: not a readable"):
        A.load_adapters(folder)
    # a folder whose safetensors holds no tensors
    from safetensors.torch import save_file
    save_file({}, weights)
    with pytest.raises(A.AdaptersFileError, match="no state dict"):
        A.load_adapters(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(A.AdaptersFileError, match=r"last/config\.json is not a valid adapters file: not JSON"):
        A.load_adapters(folder)
    (folder / "config.json").unlink()
    with pytest.raises(A.AdaptersFileError, match="config.json is missing"):
        A.load_adapters(folder)


def test_newer_format_version_is_refused(tmp_path):
    folder = A.save_adapters(_payload(), tmp_path / "best")
    meta = json.loads((folder / "config.json").read_text())
    meta["format_version"] = A.FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(A.AdaptersFileError, match="upgrade msta"):
        A.load_adapters(folder)


def _fill_hub_cache(cache: Path, repo: str, folder: Path, rev: str = "0123456789abcdef" * 2 + "01234567") -> Path:
    """Lays out ``folder``'s files as huggingface_hub's cache does: blobs, a snapshot of symlinks, refs/main."""
    entry = cache / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / rev
    snap.mkdir(parents=True)
    (entry / "blobs").mkdir()
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(rev)
    for f in folder.iterdir():
        blob = entry / "blobs" / f"blob-{f.name}"
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return entry


def test_hub_cache_entry_and_hf_hub_id_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)   # a download attempt would fail, not reach out
    src = A.save_adapters(_payload(seed=7), tmp_path / "src")
    cache = tmp_path / "hub"
    entry = _fill_hub_cache(cache, "someone/tiny-adapters", src)
    want = _payload(seed=7)["state_dict"]
    _same(A.load_adapters(entry)["state_dict"], want)                        # the cache entry folder itself
    _same(A.load_adapters("hf-hub:someone/tiny-adapters", cache_dir=cache)["state_dict"], want)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    got = A.load_adapters("hf-hub:someone/tiny-adapters")                     # huggingface_hub's default cache
    _same(got["state_dict"], want)
    assert got["source"].startswith(str(cache))
    with pytest.raises(FileNotFoundError, match=r"hf-hub:someone/absent: not in the local Hub cache and could not "
                                                r"be downloaded"):
        A.load_adapters("hf-hub:someone/absent", cache_dir=cache)
    with pytest.raises(A.AdaptersFileError, match="hf-hub:ORG/NAME"):
        A.load_adapters("hf-hub:no-slash")


def test_push_to_hub_uploads_the_two_files(tmp_path, monkeypatch):
    """push_to_hub over huggingface_hub's HfApi (a recording stand-in: tests never reach the Hub)."""
    import huggingface_hub

    calls = {}

    class RecordingApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private, exist_ok):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message, allow_patterns):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir()
                                    if any(Path(p.name).match(a) for a in allow_patterns))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    old = tmp_path / "best.pt"
    torch.save(_payload(), old)
    assert A.push_to_hub(old, "me/adapters", token="t") == "hf-hub:me/adapters"   # an old file is converted first
    assert calls == {"token": "t", "repo": ("me/adapters", True, True), "files": ["config.json", "model.safetensors"]}
    (tmp_path / "broken.pt").write_bytes(b"xx")
    calls.clear()
    with pytest.raises(A.AdaptersFileError):
        A.push_to_hub(tmp_path / "broken.pt", "me/adapters")
    assert calls == {}                                                       # nothing created for a bad file


def test_predict_command_reads_hub_ids_and_refuses_a_crafted_pickle(tmp_path, monkeypatch, capsys):
    """The reported attack, end to end: a crafted .pt given to the predict command runs nothing (exit 2, the file
    named); the same command reads adapters by hf-hub: id from a pre-filled cache."""
    import huggingface_hub.constants as hub_constants

    from msta.cli import predict
    from msta.config import config_from_dict
    from msta.models import build_model
    from tests.eval.test_protocols import CLASSES, cfg_dict, make_world

    world = make_world(tmp_path / "w")
    cfg = config_from_dict(cfg_dict(world))
    state = build_model(cfg.model).adapter_state_dict()
    names = [c.replace("_", " ") for c in CLASSES]
    src = A.save_adapters(A.adapter_payload(state_dict=state, config=config_to_dict(cfg), class_names=names,
                                            raw_labels=CLASSES, templates=["a video of {}."], step=1, epoch=1),
                          tmp_path / "src")
    video = str(world["videos"] / world["items"][0].path)

    marker = tmp_path / "pwned"
    torch.save({**A.load_adapters(src), "metrics": {"x": _Evil(marker)}}, tmp_path / "evil.pt")
    assert predict.main([video, "--ckpt", str(tmp_path / "evil.pt")]) == 2
    err = capsys.readouterr().err
    assert "evil.pt refused" in err and "Traceback" not in err and not marker.exists()

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fill_hub_cache(tmp_path / "hub", "someone/tiny", src)
    assert predict.main([video, "--ckpt", "hf-hub:someone/tiny", "--topk", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("%") == 2 and sum(n in out for n in names) == 2
