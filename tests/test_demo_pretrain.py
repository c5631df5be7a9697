"""Demo CLIP pretraining: the multi-positive loss, a few steps lower the loss, the cache, loading by name."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from msta.demo.pretrain import (PretrainCfg, appearance_prompts, ensure_pretrained, multi_positive_clip_loss,
                                pretrain_clip)

TINY = PretrainCfg(steps=12, batch_size=24, lr=2e-3, warmup=2, eval_frames=48)


def test_multi_positive_loss_reduces_to_clip_loss_with_one_positive():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.t()
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    torch.testing.assert_close(multi_positive_clip_loss(img, txt, scale, torch.eye(6, dtype=torch.bool)), expected)


def test_multi_positive_loss_does_not_punish_true_duplicates():
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    one_hot = torch.eye(3, dtype=torch.bool)
    collapsed = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # two frames + captions of the same thing
    spread = torch.tensor([[1.0, 0.0], [0.6, -0.8], [0.0, 1.0]])    # the duplicates pushed apart
    scale = torch.tensor(50.0)

    def loss(emb, positives):
        return multi_positive_clip_loss(emb, emb, scale, positives)

    # multi-positive targets prefer the truth (duplicates together); one-hot InfoNCE prefers pushing them apart
    assert loss(collapsed, same) < loss(spread, same)
    assert loss(spread, one_hot) < loss(collapsed, one_hot)


def test_cache_key_depends_on_every_setting_and_the_renderer(monkeypatch):
    from msta.data import synthetic

    assert TINY.key() == dataclasses.replace(TINY).key()
    assert TINY.key() != dataclasses.replace(TINY, steps=13).key()
    assert TINY.key() != dataclasses.replace(TINY, colours=("red",)).key()
    before = TINY.key()
    monkeypatch.setattr(synthetic, "_RADIUS", (0.2, 0.3))  # bigger or smaller objects: another pretraining
    assert TINY.key() != before


def test_appearance_prompts_match_the_appearance_classes():
    from msta.data.synthetic import task_classes
    raw, prompts = appearance_prompts()
    assert raw == task_classes("appearance") and prompts[0] == "a video of a red square."


def test_pretraining_lowers_the_loss_and_caches_loadable_weights(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from msta.models import register_model_configs
    register_model_configs()
    torch.manual_seed(123)  # pretrain_clip must not depend on the global seed it is given
    path, stats = ensure_pretrained(tmp_path, TINY, progress=False)
    assert not stats["cached"] and path.is_file() and path.with_suffix(".json").is_file()
    assert stats["final_loss"] < stats["first_loss"] - 0.2, stats
    assert 0.0 <= stats["zero_shot_acc"] <= 1.0

    again, stats2 = ensure_pretrained(tmp_path, TINY, progress=False)
    assert again == path and stats2["cached"] and stats2["final_loss"] == stats["final_loss"]

    model = open_clip.create_model("msta-demo", pretrained=str(path))
    state = torch.load(path, map_location="cpu")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_pretraining_is_deterministic():
    cfg = dataclasses.replace(TINY, steps=2, batch_size=8)
    a, sa = pretrain_clip(cfg, progress=False)
    b, sb = pretrain_clip(cfg, progress=False)
    assert sa["final_loss"] == sb["final_loss"]
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


def test_only_caption_token_rows_train_and_the_curve_is_recorded():
    open_clip = pytest.importorskip("open_clip")
    from msta.models import register_model_configs
    register_model_configs()
    cfg = dataclasses.replace(TINY, steps=4, batch_size=16, eval_frames=24)
    model, stats = pretrain_clip(cfg, progress=False, eval_every=2)
    assert [s for s, _, _ in stats["curve"]] == [2, 4] and stats["curve"][-1][2] == stats["zero_shot_acc"]
    torch.manual_seed(cfg.seed)
    init = open_clip.create_model(cfg.model, pretrained=None).token_embedding.weight
    trained = model.token_embedding.weight
    assert trained.shape == init.shape
    tokenizer = open_clip.get_tokenizer(cfg.model)
    used = tokenizer(["a photo of a small red square in the top left", "a video of a large blue circle."]).unique()
    used = used[used != 0]
    changed = (trained != init).any(1)
    assert changed[used].all()                       # caption words learn
    assert changed.sum() < 100                       # the rest of the 49408-token table is untouched
