"""msta.config: every shipped config validates; round trip; errors name the key and suggest the closest one."""
from pathlib import Path

import pytest

from msta.config import (ConfigError, ExperimentCfg, apply_overrides, config_from_dict, config_to_dict, dump_config,
                         load_config)

CONFIGS = sorted(p for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


# the retrieval configs (captions, InfoNCE, their own recipe) are checked in tests/eval/test_retrieval_protocol.py, the
# ViCLIP ones (*_viclip.yaml: this recipe on the other backbone) in tests/test_viclip_configs.py
@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name != "demo.yaml" and not p.name.startswith("retrieval_")
                                  and not p.stem.endswith("_viclip")],
                         ids=lambda p: p.name)
def test_shipped_configs_follow_the_paper_recipe(path):
    cfg = load_config(path)
    assert (cfg.model.name, cfg.model.pretrained, cfg.model.num_frames, cfg.data.input_size) == \
        ("ViT-B-16", "openai", 8, 224)
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.betas, o.epochs, o.warmup_epochs, o.min_lr) == \
        (1e-3, 1e-3, (0.9, 0.98), 50, 5, 1e-5)
    assert (cfg.train.batch_size, cfg.train.precision) == (32, "fp32")
    m = cfg.model.msta
    assert (m.dim, m.text_blocks, m.vision_blocks, m.text, m.vision) == (128, (-5, -1), (-5, -1), True, True)
    assert (cfg.loss.alpha, cfg.loss.consistency, cfg.text.num_descriptions) == (1.0, True, 2)
    if cfg.data.dataset == "ssv2":
        assert cfg.data.flip is False
    clips = {"hmdb51": 10, "ucf101": 5, "k400": 4, "k600": 4, "ssv2": 2}[cfg.data.dataset]
    assert (cfg.data.views.clips, cfg.data.views.crops) == (clips, 3)


def test_fewshot_k_by_override():
    assert load_config(CONFIGS[0].parent / "fewshot_hmdb.yaml", ["data.shots=4"]).data.shots == 4


@pytest.mark.parametrize("data, key, suggestion", [
    ({"optim": {"lrr": 1.0}}, "optim.lrr", "optim.lr"),
    ({"trian": {}}, "trian", "train"),
    ({"model": {"msta": {"dimm": 3}}}, "model.msta.dimm", "model.msta.dim"),
])
def test_unknown_key_names_key_and_suggests(data, key, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown config key '{key}'.*did you mean '{suggestion}'"):
        config_from_dict(data)


@pytest.mark.parametrize("data, match", [
    ({"optim": {"lr": "fast"}}, r"optim\.lr must be a number"),
    ({"train": {"micro_batch": 1.5}}, r"train\.micro_batch must be an integer"),
    ({"loss": {"consistency": "yes"}}, r"loss\.consistency must be true or false"),
    ({"optim": {"betas": [0.9]}}, r"optim\.betas must be a list of 2 values"),
    ({"train": {"precision": "fp8"}}, r"train\.precision must be"),
    ({"train": {"zero_stage": 4}}, r"train\.zero_stage must be 0, 1, 2 or 3"),
    ({"optim": {"lr": -1.0}}, r"optim\.lr must be > 0"),
    ({"data": {"select_on": "best"}}, r"data\.select_on"),
])
def test_bad_types_and_values_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_overrides_are_typed_and_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {batch_size: 8, micro_batch: 4}\n")
    cfg = load_config(p, ["optim.lr=5e-4", "model.msta.text_blocks=[2,3]", "model.pretrained=null"])
    assert cfg.optim.lr == 5e-4 and cfg.model.msta.text_blocks == (2, 3) and cfg.model.pretrained is None
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'optim\.l'.*did you mean 'optim\.lr'"):
        load_config(p, ["optim.l=1"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_overrides({}, ["optim.lr"])


def test_base_inheritance_and_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {lr: 0.5, epochs: 3, warmup_epochs: 1}\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\noptim: {epochs: 7}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.optim.lr, cfg.optim.epochs) == (0.5, 7)
    (tmp_path / "c.yaml").write_text("_base_: d.yaml\n")
    (tmp_path / "d.yaml").write_text("_base_: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "c.yaml")


def test_dict_round_trip_of_defaults():
    assert config_from_dict(config_to_dict(ExperimentCfg())) == ExperimentCfg()
