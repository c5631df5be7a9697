"""VideoCLIP on the tiny registered config: equivalence with open_clip, gradients, the DESIGN §3 fast paths."""
import dataclasses

import open_clip
import pytest
import torch
import torch.nn.functional as F

from msta.config import ModelCfg, MstaCfg, PerfCfg, StAdapterCfg
from msta.models import build_model
from msta.models.injection import AdaptedBlock

PROMPTS = ["a video of a person juggling balls", "juggling", "knitting", "a clip of knitting a long scarf",
           "skiing", "a video of skiing down a hill"]  # 3 classes x 2 templates, class-major
OFF = PerfCfg(frozen_prefix_no_grad=False, cache_text=False, cut_text=False, grad_checkpointing=False)
ON = PerfCfg(frozen_prefix_no_grad=True, cache_text=True, cut_text=True, grad_checkpointing=True)
FULL_MSTA = MstaCfg(dim=16, text_blocks=(2, 2), vision_blocks=(1, 2))
ST = StAdapterCfg(enabled=True, blocks=(1, 2), width=8, positions=("attn", "mlp"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A plain open_clip tiny model and the file its weights were saved to."""
    torch.manual_seed(0)
    clip = open_clip.create_model("msta-tiny", pretrained=None).eval()
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(clip.state_dict(), path)
    return clip, str(path)


def _build(plain, **kw):
    model = build_model(ModelCfg(name="msta-tiny", pretrained=plain[1], num_frames=4, **kw))
    return model


def _video(b=2, t=4, seed=1):
    return torch.randn(b, t, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _perturb_st(model):
    torch.manual_seed(3)
    for name, p in model.adapters.named_parameters():
        if name.startswith("st.") and torch.count_nonzero(p) == 0:
            p.data.normal_(0, 0.1)


def _plain_video(clip, video):
    b, t = video.shape[:2]
    emb = clip.encode_image(video.flatten(0, 1)).view(b, t, -1).mean(1)
    return F.normalize(emb, dim=-1)


def _loss(model, video, labels):
    out = model(video)
    return F.cross_entropy(out.logit_scale * out.video_emb @ out.class_emb.T, labels)


def test_disabled_adapters_equal_open_clip(plain):
    clip, _ = plain
    video, ids = _video(), open_clip.get_tokenizer("msta-tiny")(PROMPTS)
    for perf, exact in ((OFF, True), (PerfCfg(), False)):
        model = _build(plain, msta=MstaCfg(enabled=False), perf=perf).eval()
        assert model.param_report().trainable == 0
        with torch.no_grad():
            got_v, got_t = model.encode_video(video), model.encode_text(ids)
            ref_v, ref_t = _plain_video(clip, video), clip.encode_text(ids, normalize=True)
        if exact:
            assert torch.equal(got_v, ref_v) and torch.equal(got_t, ref_t)
        else:
            torch.testing.assert_close(got_v, ref_v, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(got_t, ref_t, atol=1e-6, rtol=1e-5)


def test_st_adapters_at_init_equal_open_clip(plain):
    clip, _ = plain
    model = _build(plain, msta=MstaCfg(enabled=False), st_adapter=ST).eval()
    video, ids = _video(), model.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(video), _plain_video(clip, video), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), clip.encode_text(ids, normalize=True), atol=1e-6,
                                   rtol=1e-5)


def test_state_dict_keys_and_weights_match_open_clip(plain):
    clip, _ = plain
    model = _build(plain, msta=FULL_MSTA, st_adapter=ST)
    sd = model.state_dict()
    backbone = {k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}
    assert set(backbone) == set(clip.state_dict())  # wrapped blocks keep the original key names
    assert set(sd) - {f"clip.{k}" for k in backbone} == {k for k in sd if k.startswith("adapters.")}
    for k, v in clip.state_dict().items():
        assert torch.equal(backbone[k].reshape(v.shape), v), k  # bit-exact load from the saved file
    assert model.clip.logit_scale.shape == (1,)
    assert model(None, with_classes=False).logit_scale.shape == ()


def test_gradients_frozen_none_trainable_finite_nonzero(plain):
    # visual adapters below the last block: with CLS pooling, the last block's patch-token outputs (temporal conv,
    # ST) cannot reach the embedding, so their gradient is exactly zero there
    model = _build(plain, msta=MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 1)),
                   st_adapter=dataclasses.replace(ST, blocks=(1, 1)))
    _perturb_st(model)
    model.set_class_prompts(PROMPTS, 2)
    _loss(model, _video(), torch.tensor([0, 2])).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert name.startswith("adapters.")
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_fast_paths_match_plain_path(plain):
    slow = _build(plain, msta=FULL_MSTA, st_adapter=ST, perf=OFF)
    fast = _build(plain, msta=FULL_MSTA, st_adapter=ST, perf=ON)
    _perturb_st(slow)
    fast.load_adapter_state_dict(slow.adapter_state_dict())
    labels = torch.tensor([1, 0])
    for prompts in (PROMPTS, PROMPTS[2:] + ["a b c d e f g h i j k", "x"]):  # second set: cache recomputed
        for model in (slow, fast):
            model.set_class_prompts(prompts, 2)
        for step in range(2):  # step 1 reuses the cached prefix
            video = _video(seed=step)
            grads = []
            for model in (slow, fast):
                model.zero_grad()
                loss = _loss(model, video, labels)
                loss.backward()
                grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.requires_grad}))
            torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
            for name, g in grads[0][1].items():
                torch.testing.assert_close(g, grads[1][1][name], atol=1e-5, rtol=1e-4, msg=name)
    assert fast._class_cache is not None and fast._class_cache[0].shape[1] < fast.context_length


def test_frame_order_matters_only_with_temporal_parts(plain):
    video = _video(b=1, t=4)
    reverse = video.flip(1)
    temporal = _build(plain, msta=FULL_MSTA).eval()
    spatial = _build(plain, msta=dataclasses.replace(FULL_MSTA, temporal=False)).eval()
    with torch.no_grad():
        assert not torch.allclose(temporal.encode_video(video), temporal.encode_video(reverse), atol=1e-6)
        torch.testing.assert_close(spatial.encode_video(video), spatial.encode_video(reverse), atol=1e-6, rtol=1e-5)


def test_frozen_teacher_equals_open_clip(plain):
    clip, _ = plain
    model = _build(plain, msta=MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 2)))
    ids = model.tokenize(PROMPTS)
    ref = clip.encode_text(ids, normalize=True).detach()
    frozen = model.encode_text_frozen(ids)
    assert not frozen.requires_grad
    torch.testing.assert_close(frozen, ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(model.encode_text(ids), ref, atol=1e-6)
    out = model(None, frozen_texts=ids, with_classes=False)
    torch.testing.assert_close(out.frozen_emb, ref, atol=1e-6, rtol=1e-5)


def test_frozen_video_teacher_equals_open_clip(plain):
    """Every visual adapter (MSTA spatial + temporal, ST-Adapters) is skipped; the adapted path is restored after."""
    clip, _ = plain
    model = _build(plain, msta=FULL_MSTA, st_adapter=ST)
    _perturb_st(model)
    video = _video()
    ref = _plain_video(clip, video).detach()
    adapted = model.encode_video(video)
    assert not torch.allclose(adapted, ref, atol=1e-4)
    teacher = model.encode_video_frozen(video)
    assert not teacher.requires_grad
    torch.testing.assert_close(teacher, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.encode_video(video), adapted)  # the bypass ends with the context
    ids = model.tokenize(PROMPTS[:3])
    out = model(video, ref_texts=ids, teacher_video=True, with_classes=False)
    torch.testing.assert_close(out.teacher_video_emb, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.ref_emb, model.encode_text(ids))
    assert out.ref_emb.requires_grad and out.class_emb is None


@pytest.mark.parametrize("no_grad_prefix", [True, False])
def test_teacher_shares_the_frozen_prefix_and_still_equals_open_clip(plain, no_grad_prefix):
    """Adapters from block 2 on: the forward runs block 1 once for both the adapted and the frozen embedding."""
    clip, _ = plain
    perf = dataclasses.replace(OFF, frozen_prefix_no_grad=no_grad_prefix)
    model = _build(plain, msta=MstaCfg(dim=16, text_blocks=(2, 2), vision_blocks=(2, 2)), perf=perf)
    video = _video(seed=4)
    ran = []
    hook = model.clip.visual.transformer.resblocks[0].ln_1.register_forward_hook(lambda *_: ran.append(1))
    out = model(video, teacher_video=True, with_classes=False)
    hook.remove()
    assert len(ran) == 1
    torch.testing.assert_close(out.teacher_video_emb, _plain_video(clip, video).detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.video_emb, model.encode_video(video))
    assert out.video_emb.requires_grad and not out.teacher_video_emb.requires_grad


def test_shared_layer_is_one_module_used_by_both_towers(plain):
    model = _build(plain, msta=FULL_MSTA)
    layer = model.adapters["msta"]["2"]
    text_block, vis_block = model.clip.transformer.resblocks[1], model.clip.visual.transformer.resblocks[1]
    assert isinstance(text_block, AdaptedBlock) and isinstance(vis_block, AdaptedBlock)
    assert text_block._refs[1] is layer and vis_block._refs[1] is layer
    assert sum(1 for k in model.state_dict() if ".shared." in k) == 4  # layers 1 and 2, weight + bias, once
    assert model.adapters["msta"]["1"].text is None  # text range 2-2: layer 1 is visual-only, still has shared
    for encode in (lambda: model.encode_video(_video()), lambda: model.encode_text(model.tokenize(PROMPTS))):
        model.zero_grad()
        encode().sum().backward()
        assert layer.shared.weight.grad is not None and layer.shared.weight.grad.abs().sum() > 0


def test_classes_and_forward_shapes(plain):
    model = _build(plain, msta=FULL_MSTA)
    with pytest.raises(ValueError, match="set_class_prompts"):
        model.encode_classes()
    with pytest.raises(ValueError, match="num_templates"):
        model.set_class_prompts(PROMPTS[:5], 2)
    model.set_class_prompts(PROMPTS, 2)
    out = model(_video(b=3))
    assert out.video_emb.shape == (3, 32) and out.class_emb.shape == (3, 32)
    torch.testing.assert_close(out.class_emb.norm(dim=-1), torch.ones(3))
    ref = F.normalize(model.encode_text(model.tokenize(PROMPTS)).view(3, 2, -1).mean(1), dim=-1)
    torch.testing.assert_close(out.class_emb, ref, atol=1e-6, rtol=1e-5)
    captions = model(_video(b=3), texts=model.tokenize(PROMPTS[:3]))
    assert captions.class_emb.shape == (3, 32)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model.encode_video(torch.randn(4, 3, 32, 32))
    assert (model.image_size, model.context_length, model.num_frames) == (32, 16, 4)
    assert len(model.image_mean) == len(model.image_std) == 3


def test_param_report_and_adapter_state_dict(plain):
    model = _build(plain, msta=FULL_MSTA, st_adapter=ST)
    report = model.param_report()
    n_adapt = sum(p.numel() for p in model.adapters.parameters())
    assert report.trainable == n_adapt and report.total == sum(p.numel() for p in model.parameters())
    assert report.line() == (f"trainable params: {n_adapt:,} / total: {report.total:,} "
                             f"({100 * n_adapt / report.total:.2f}%)")
    assert report.blocks == ["text.2-2 of 2 msta r=16", "visual.1-2 of 2 msta r=16 temporal k=3",
                             "visual.1-2 of 2 st w=8 attn+mlp"]
    sd = model.adapter_state_dict()
    assert sum(v.numel() for v in sd.values()) == n_adapt and all(k.startswith("adapters.") for k in sd)
    other = _build(plain, msta=FULL_MSTA, st_adapter=ST)
    other.load_adapter_state_dict(sd)
    assert all(torch.equal(v, other.adapter_state_dict()[k]) for k, v in sd.items())
    bad = dict(sd)
    bad.pop("adapters.msta.2.shared.weight")
    bad["adapters.bogus"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['adapters.msta.2.shared.weight'\].*adapters.bogus"):
        other.load_adapter_state_dict(bad)


def test_temporal_cls_reaches_the_embedding_from_the_last_block(plain):
    """Patch-only temporal conv in the last block cannot change the pooled CLS embedding; over the CLS tokens it does,
    and it is order-sensitive while the spatial path is not."""
    video = _video(b=1, t=4)
    last = dataclasses.replace(FULL_MSTA, vision_blocks=(2, 2), text_blocks=(2, 2))
    patch_only = _build(plain, msta=last).eval()
    with_cls = _build(plain, msta=dataclasses.replace(last, temporal_cls=True)).eval()
    with_cls.load_adapter_state_dict(patch_only.adapter_state_dict())   # same weights, same parameter count
    assert with_cls.param_report().trainable == patch_only.param_report().trainable
    with torch.no_grad():
        torch.testing.assert_close(patch_only.encode_video(video), patch_only.encode_video(video.flip(1)),
                                   atol=1e-6, rtol=1e-5)
        assert not torch.allclose(with_cls.encode_video(video), with_cls.encode_video(video.flip(1)), atol=1e-5)
