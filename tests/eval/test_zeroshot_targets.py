"""Zero-shot targets: the shipped K400 config names the HMDB, UCF and K600 target configs, resolved from the working
directory or shipped, each with its 3 test lists, class tables, video pool and views; a wrong target path fails early."""
from pathlib import Path

import pytest

from msta.config import ConfigError, load_config
from msta.eval.runner import zeroshot_targets

REPO = Path(__file__).resolve().parents[2]


def test_shipped_zeroshot_targets(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config("configs/zeroshot_k400.yaml")
    targets = dict(zeroshot_targets(cfg))
    assert list(targets) == ["configs/zeroshot_hmdb.yaml", "configs/zeroshot_ucf.yaml", "configs/zeroshot_k600.yaml"]
    for path, t in targets.items():
        assert t.eval.protocol == "zeroshot" and len(t.eval.splits) == 3 and t.eval.video_pool
        assert (t.eval.views.clips, t.eval.views.crops) == (1, 1) and not t.eval.targets
    hmdb, ucf, k600 = targets.values()
    assert hmdb.eval.splits == tuple(f"data/hmdb51/lists/test{s}.txt" for s in (1, 2, 3))
    assert ucf.eval.splits == tuple(f"data/ucf101/lists/test{s}.txt" for s in (1, 2, 3))
    assert hmdb.eval.half_class_draws == ucf.eval.half_class_draws == 10 and k600.eval.half_class_draws == 0
    assert len(hmdb.eval.class_tables) == len(ucf.eval.class_tables) == 1 and len(k600.eval.class_tables) == 3
    assert (hmdb.data.dataset, ucf.data.dataset, k600.data.dataset) == ("hmdb51", "ucf101", "k600")


def test_config_without_targets_is_its_own_target():
    cfg = load_config(REPO / "configs" / "zeroshot_hmdb.yaml")
    assert zeroshot_targets(cfg) == [("", cfg)]


def test_targets_resolve_from_another_directory_and_a_missing_one_names_the_key(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)   # nothing here: the shipped target configs are found by the path rule
    cfg = load_config(REPO / "configs" / "zeroshot_k400.yaml")
    targets = zeroshot_targets(cfg)
    assert [Path(p).name for p, _ in targets] == ["zeroshot_hmdb.yaml", "zeroshot_ucf.yaml", "zeroshot_k600.yaml"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p, _ in targets)
    cfg = load_config(REPO / "configs" / "zeroshot_k400.yaml", ["eval.targets=[configs/zeroshot_nope.yaml]"])
    with pytest.raises(ConfigError, match=r"eval\.targets: configs/zeroshot_nope\.yaml not found.*shipped config"):
        zeroshot_targets(cfg)
    (tmp_path / "bad.yaml").write_text("eval: {protocl: zeroshot}\n")
    cfg = load_config(REPO / "configs" / "zeroshot_k400.yaml", ["eval.targets=[bad.yaml]"])
    with pytest.raises(ConfigError, match=r"eval\.targets: bad\.yaml: unknown config key 'eval\.protocl'"):
        zeroshot_targets(cfg)
