"""End to end in this process: the tiny model trains on synthetic mp4s through msta.engine.launch.train."""
import json

import pytest
import torch

from msta.config import load_config
from msta.engine.checkpoint import find_last_complete, load_adapters
from tests.engine.helpers import tiny_config, write_dataset


@pytest.fixture(scope="module")
def data_keys(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def _train_records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_trains_and_loss_falls(tmp_path, data_keys, launcher_env):
    from msta.engine.launch import train
    from msta.models import build_model

    cfg = load_config(tiny_config(tmp_path, data_keys))
    results = train(cfg)
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == cfg
    records = _train_records(run)
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 12 and {"loss_ce", "loss_cc", "lr", "clips_per_s"} <= set(records[0])
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, (first, last)
    assert any(r["split"] == "val" for r in records)
    assert results["selected_on"] == "val" and results["bad_videos"] == {"train": 0, "val": 0}
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 12
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert find_last_complete(run).name == "step_000012"

    # the adapters-only file is enough to use the result, without DeepSpeed
    payload = load_adapters(run / "last.pt")
    assert payload["raw_labels"] == ["red_square", "green_circle", "blue_triangle", "yellow_square"]
    assert payload["templates"] == ["a video of {}."] and payload["step"] == 12
    fresh = build_model(cfg.model)
    initial = {k: v.clone() for k, v in fresh.adapter_state_dict().items()}
    fresh.load_adapter_state_dict(payload["state_dict"])
    assert set(payload["state_dict"]) == set(initial)
    assert any(not torch.equal(initial[k], v) for k, v in payload["state_dict"].items())
    assert load_adapters(run / "best")["metrics"]["selected_on"] == "val"


def test_init_adapters_start_from_saved_weights(tmp_path, data_keys, launcher_env, monkeypatch):
    from msta.config import config_to_dict
    from msta.engine import launch
    from msta.engine.checkpoint import adapter_payload, atomic_torch_save
    from msta.models import build_model

    cfg = load_config(tiny_config(tmp_path, data_keys))
    g = torch.Generator().manual_seed(5)
    saved = {k: torch.randn(v.shape, generator=g) for k, v in build_model(cfg.model).adapter_state_dict().items()}
    payload = adapter_payload(state_dict=saved, config=config_to_dict(cfg), class_names=[], raw_labels=[],
                              templates=[], step=7, epoch=1)
    init = atomic_torch_save(payload, tmp_path / "k400" / "best.pt")
    missing = load_config(tmp_path / "tiny.yaml", [f"model.init_adapters={tmp_path / 'missing.pt'}"])
    with pytest.raises(FileNotFoundError, match=r"model\.init_adapters: no adapters file"):
        launch._init_adapters(missing, build_model(cfg.model))
    scratch = build_model(cfg.model).adapter_state_dict()
    assert not all(torch.equal(scratch[k], v) for k, v in saved.items())

    # the model handed to DeepSpeed holds the saved weights; stop there (no need to train)
    class Stop(Exception):
        pass

    def capture(wrapped, *args, **kwargs):
        raise Stop({k: v.detach().clone() for k, v in wrapped.model.adapter_state_dict().items()})

    monkeypatch.setattr(launch, "initialize_engine", capture)
    with pytest.raises(Stop) as stopped:
        launch.train(load_config(tmp_path / "tiny.yaml", [f"model.init_adapters={init}"]))
    start = stopped.value.args[0]
    assert set(start) == set(saved) and all(torch.equal(start[k], v) for k, v in saved.items())


@pytest.mark.slow
def test_two_runs_in_one_process(tmp_path, data_keys, launcher_env):
    """A notebook or a test suite may train twice in one process: the first run's process group is torn down
    through DeepSpeed, so the second does not broadcast over a destroyed group ("Group ... is not registered")."""
    from msta.engine.launch import train

    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        path = tiny_config(tmp_path / name, data_keys, optim={"epochs": 1, "warmup_epochs": 0})
        train(load_config(path))
        assert json.loads((tmp_path / name / "run" / "train_summary.json").read_text())["steps"] == 3
