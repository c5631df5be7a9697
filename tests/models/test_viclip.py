"""ViCLIP's architecture without the real weights (issue 15.1, 15.4): counts, token order, temporal embedding,
agreement with open_clip's QuickGELU CLIP ViT (an independent implementation), joint attention across frames."""
import logging

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP

from msta.config import ModelCfg, MstaCfg, PerfCfg, StAdapterCfg
from msta.models import VideoCLIP, build_model
from msta.models.backbones.viclip import IMAGENET_MEAN, IMAGENET_STD, VICLIP_SIZES, ViCLIP
from msta.models.backbones.viclip_weights import load_viclip_state, viclip_state_from_open_clip, viclip_tokenizer
from msta.models.layout import FRAMES, JOINT

TINY = VICLIP_SIZES["viclip-tiny"]
TEXTS = ["a video of a person juggling balls", "knitting", "skiing down a snowy hill at dusk"]


def _meta_viclip(name):
    with torch.device("meta"):
        return ViCLIP(VICLIP_SIZES[name], name)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_viclip_b16_parameter_counts():
    model = _meta_viclip("viclip-b16")
    assert _count(model.vision_encoder) == 86_198_784
    assert _count(model.text_encoder) == 63_405_056
    assert model.temp.numel() == 1 and _count(model) == 149_603_841


def test_viclip_l14_parameter_count():
    assert _count(_meta_viclip("viclip-l14")) == 427_590_145


@pytest.mark.parametrize("msta, expected", [(MstaCfg(dim=256, text_blocks=(1, 12), vision_blocks=(1, 12)), 8_712_192),
                                            (MstaCfg(dim=128), 1_744_000)], ids=["r256-1-12", "r128-8-12"])
def test_msta_counts_on_viclip_b16(msta, expected):
    clip = _meta_viclip("viclip-b16")
    with torch.device("meta"):
        model = VideoCLIP(clip, ModelCfg(name="viclip-b16", msta=msta), viclip_tokenizer())
    model.freeze_backbone()
    report = model.param_report()
    assert report.trainable == expected and report.total == 149_603_841 + expected
    assert report.blocks[0] == ("text.1-12 of 12 msta r=256" if msta.dim == 256 else "text.8-12 of 12 msta r=128")


def _tiny(seed=0):
    torch.manual_seed(seed)
    return ViCLIP(TINY, "viclip-tiny").eval()


def test_token_order_is_patch_major_time_minor():
    model = _tiny()
    enc = model.vision_encoder
    with torch.no_grad():
        enc.temporal_positional_embedding.normal_()
        video = torch.randn(2, 8, 3, 32, 32)
        got = enc.embed(video)  # (B, 1 + N*T, D)
        grid, p, t = 4, 8, 8
        w = enc.conv1.weight[:, :, 0]  # (D, 3, P, P)
        for n in (0, 5, 15):
            i, j = divmod(n, grid)
            for f in (0, 3, 7):
                patch = video[:, f, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
                token = torch.einsum("bchw,dchw->bd", patch, w) + enc.positional_embedding[1 + n] \
                    + enc.temporal_positional_embedding[0, f]
                torch.testing.assert_close(got[:, 1 + n * t + f], enc.ln_pre(token), atol=1e-5, rtol=1e-4)
        cls = enc.ln_pre(enc.class_embedding + enc.positional_embedding[0])  # no temporal embedding on CLS
        torch.testing.assert_close(got[:, 0], cls.expand(2, -1), atol=1e-6, rtol=1e-5)


def test_temporal_embedding_for_other_frame_counts(caplog):
    enc = _tiny().vision_encoder
    with torch.no_grad():
        enc.temporal_positional_embedding.copy_(torch.arange(8.0).view(1, 8, 1).expand(1, 8, TINY.width))
        table = enc.temporal_positional_embedding[0]
        torch.testing.assert_close(enc.temporal_embedding(8), table)
        torch.testing.assert_close(enc.temporal_embedding(1), table.mean(0, keepdim=True))  # 3.5
        with caplog.at_level(logging.INFO, logger="msta.models.backbones.viclip"):
            up = enc.temporal_embedding(16)
            down = enc.temporal_embedding(4)
    # linear, align_corners=False: output i samples source (i + 0.5) * 8 / 16 - 0.5, clamped to [0, 7]
    src = ((torch.arange(16.0) + 0.5) * 0.5 - 0.5).clamp(0, 7)
    torch.testing.assert_close(up[:, 0], src)
    # fewer frames: interpolated too, output i samples source (i + 0.5) * 2 - 0.5 = 0.5, 2.5, 4.5, 6.5
    torch.testing.assert_close(down[:, 0], torch.tensor([0.5, 2.5, 4.5, 6.5]))
    assert "16 frames, temporal embedding trained for 8: using linear interpolation" in caplog.text
    assert "4 frames, temporal embedding trained for 8: using linear interpolation" in caplog.text


def _open_clip_twin():
    """open_clip's own CLIP with viclip-tiny's widths and QuickGELU: the independent implementation."""
    torch.manual_seed(7)
    return CLIP(embed_dim=TINY.embed, quick_gelu=True,
                vision_cfg={"image_size": TINY.image, "layers": TINY.layers, "width": TINY.width,
                            "head_width": TINY.width // TINY.heads, "patch_size": TINY.patch},
                text_cfg={"context_length": TINY.context, "vocab_size": TINY.vocab, "width": TINY.text_width,
                          "heads": TINY.text_heads, "layers": TINY.text_layers}).eval()


def test_image_and_text_embeddings_equal_open_clip_quickgelu_clip():
    clip = _open_clip_twin()
    model = ViCLIP(TINY, "viclip-tiny").eval()
    load_viclip_state(model, viclip_state_from_open_clip(clip.state_dict()))
    images = torch.randn(3, 3, 32, 32)
    ids = viclip_tokenizer()(TEXTS)
    with torch.no_grad():
        # T = 1 with a zero temporal table: ViCLIP's image embedding is CLIP's
        torch.testing.assert_close(model.encode_vision(images), clip.encode_image(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.encode_text(ids), clip.encode_text(ids), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close((1 / model.temp).reshape(()), clip.logit_scale.exp())


def test_through_videoclip_without_adapters_equals_the_towers():
    model = _tiny(3)
    with torch.no_grad():
        model.vision_encoder.temporal_positional_embedding.normal_()
    video, ids = torch.randn(2, 8, 3, 32, 32), viclip_tokenizer()(TEXTS)
    with torch.no_grad():
        ref_v, ref_t = F.normalize(model.encode_vision(video), dim=-1), F.normalize(model.encode_text(ids), dim=-1)
    vc = VideoCLIP(model, ModelCfg(name="viclip-tiny", msta=MstaCfg(enabled=False)), viclip_tokenizer()).eval()
    assert vc.backbone.name == "viclip" and vc.context_length == 32
    assert (vc.image_size, vc.image_mean, vc.image_std) == (32, IMAGENET_MEAN, IMAGENET_STD)
    assert (vc.preprocess.eval_resize, vc.preprocess.interpolation) == ("squash", "bicubic")
    with torch.no_grad():
        torch.testing.assert_close(vc.encode_video(video), ref_v, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(vc.encode_text(ids), ref_t, atol=1e-6, rtol=1e-5)
        assert float(vc(video, with_classes=False).logit_scale) == pytest.approx(100.0)


def _final_tokens(vc, video):
    bb = vc.backbone
    with torch.no_grad():
        x = bb.visual_embed(vc.clip, video)
        for blk in bb.visual_blocks(vc.clip):
            x = bb.run_frozen_block(blk, x)
    return x


def test_joint_attention_mixes_frames_frame_wise_clip_does_not():
    torch.manual_seed(0)
    open_clip_model = build_model(ModelCfg(name="msta-tiny", num_frames=8, msta=MstaCfg(enabled=False))).eval()
    viclip = VideoCLIP(_tiny(1), ModelCfg(name="viclip-tiny", msta=MstaCfg(enabled=False)), viclip_tokenizer()).eval()
    video = torch.randn(1, 8, 3, 32, 32)
    changed = video.clone()
    changed[:, 1] = torch.randn(3, 32, 32)  # only frame 1 differs
    for vc, layout, mixes in ((viclip, JOINT, True), (open_clip_model, FRAMES, False)):
        before = layout.patches(_final_tokens(vc, video), 8)[:, 2]  # the tokens of frame 2
        after = layout.patches(_final_tokens(vc, changed), 8)[:, 2]
        assert (not torch.allclose(before, after, atol=1e-4)) == mixes, vc.backbone.name
        with torch.no_grad():
            assert not torch.allclose(vc.encode_video(video), vc.encode_video(changed), atol=1e-4)


def test_adapters_through_the_same_config_keys():
    cfg = ModelCfg(name="viclip-tiny", msta=MstaCfg(dim=16, text_blocks=(-1, -1), vision_blocks=(1, 2)),
                   st_adapter=StAdapterCfg(enabled=True, width=8, positions=("attn", "mlp")))
    model = build_model(cfg)
    assert model.param_report().blocks == ["text.2-2 of 2 msta r=16", "visual.1-2 of 2 msta r=16 temporal k=3",
                                           "visual.1-2 of 2 st w=8 attn+mlp"]
    assert all(p.requires_grad == n.startswith("adapters.") for n, p in model.named_parameters())
    model.set_class_prompts(TEXTS, 1)
    out = model(torch.randn(2, 8, 3, 32, 32))
    F.cross_entropy(out.logit_scale * out.video_emb @ out.class_emb.T, torch.tensor([0, 2])).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    with pytest.raises(ValueError, match="temporal_cls needs one CLS token per frame.*viclip-tiny"):
        build_model(ModelCfg(name="viclip-tiny", msta=MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 2),
                                                              temporal_cls=True)))


OFF = PerfCfg(frozen_prefix_no_grad=False, cache_text=False, cut_text=False, grad_checkpointing=False)
ON = PerfCfg(frozen_prefix_no_grad=True, cache_text=True, cut_text=True, grad_checkpointing=True)


@pytest.mark.slow
def test_perf_switches_are_exact_on_viclip(tmp_path):
    path = tmp_path / "viclip.pth"
    torch.save({"model": _tiny(5).state_dict()}, path)
    msta = MstaCfg(dim=16, text_blocks=(2, 2), vision_blocks=(2, 2))
    st = StAdapterCfg(enabled=True, blocks=(2, 2), width=8)
    slow, fast = (build_model(ModelCfg(name="viclip-tiny", pretrained=str(path), msta=msta, st_adapter=st, perf=p))
                  for p in (OFF, ON))
    torch.manual_seed(3)
    for name, p in slow.adapters.named_parameters():
        p.data.normal_(0, 0.1)
    fast.load_adapter_state_dict(slow.adapter_state_dict())
    prompts = ["a video of juggling", "juggling balls", "knitting", "a clip of knitting a very long woolly scarf"]
    for model in (slow, fast):
        model.set_class_prompts(prompts, 2)
    video, labels = torch.randn(2, 8, 3, 32, 32), torch.tensor([1, 0])
    grads = []
    for step in range(2):  # step 1 reuses the cached text prefix
        for model in (slow, fast):
            model.zero_grad()
            out = model(video, frozen_texts=model.tokenize(prompts[:2]), teacher_video=True)
            loss = F.cross_entropy(out.logit_scale * out.video_emb @ out.class_emb.T, labels) \
                + (out.frozen_emb.sum() + out.teacher_video_emb.sum()) * 0
            loss.backward()
            grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
        (l0, g0), (l1, g1) = grads[-2:]
        torch.testing.assert_close(l0, l1, atol=1e-5, rtol=1e-5)
        for name, g in g0.items():
            torch.testing.assert_close(g, g1[name], atol=1e-5, rtol=1e-4, msg=name)
    assert fast._class_cache is not None and fast._class_cache[0].shape[1] < 32  # cut within the 32 tokens


def test_long_texts_are_cut_to_32_with_eot_forced():
    ids = viclip_tokenizer()([" ".join(["word"] * 50), "short"])
    assert ids.shape == (2, 32)
    assert int(ids[0, -1]) == 49407 and int((ids[0] != 0).sum()) == 32  # SOT + 30 content tokens + EOT
    assert int(ids[1].argmax()) == 2 and int(ids[1, 0]) == 49406


def test_frozen_teacher_of_viclip_equals_the_plain_towers(tmp_path):
    path = tmp_path / "viclip.pth"
    torch.save(_tiny(2).state_dict(), path)
    msta = MstaCfg(dim=16, text_blocks=(1, 2), vision_blocks=(1, 2))
    model = build_model(ModelCfg(name="viclip-tiny", pretrained=str(path), msta=msta))
    plain = build_model(ModelCfg(name="viclip-tiny", pretrained=str(path), msta=MstaCfg(enabled=False)))
    ids, video = model.tokenize(TEXTS), torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model.encode_text(ids), plain.encode_text(ids), atol=1e-4)  # adapters act
        torch.testing.assert_close(model.encode_text_frozen(ids), plain.encode_text(ids), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model.encode_video_frozen(video), plain.encode_video(video), atol=1e-6, rtol=1e-5)
