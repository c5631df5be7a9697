"""Released ViCLIP checkpoints from a local file (issue 15.2): the facts file's key table, wrappers, size checks.

The expected keys and shapes are written out here from the table in reference/viclip-and-retrieval.md §2.2 (not
taken from msta's module), for B/16 (checked against the model built on the meta device) and for the tiny size
(a random checkpoint written in that layout, then loaded strictly).
"""
import pytest
import torch
from safetensors.torch import save_file

from msta.config import ConfigError, ModelCfg, MstaCfg
from msta.models import build_model
from msta.models.backbones.viclip import VICLIP_SIZES, ViCLIP
from msta.models.backbones.viclip_weights import _check_size, detect_size, read_state_dict


def released_layout(width, layers, patch, grid, embed, text_width, text_layers, frames=8, context=32,
                    vocab=49408):
    """{key: shape} of a released ViCLIP checkpoint (facts §2.2)."""
    w, d = width, text_width
    keys = {"temp": (), "vision_encoder.conv1.weight": (w, 3, 1, patch, patch),
            "vision_encoder.class_embedding": (w,), "vision_encoder.positional_embedding": (grid * grid + 1, w),
            "vision_encoder.ln_pre.weight": (w,), "vision_encoder.ln_pre.bias": (w,),
            "vision_encoder.temporal_positional_embedding": (1, frames, w),
            "vision_encoder.ln_post.weight": (w,), "vision_encoder.ln_post.bias": (w,),
            "vision_encoder.proj": (w, embed),
            "text_encoder.token_embedding.weight": (vocab, d), "text_encoder.positional_embedding": (context, d),
            "text_encoder.ln_final.weight": (d,), "text_encoder.ln_final.bias": (d,),
            "text_encoder.text_projection": (d, embed)}
    for prefix, n, c in (("vision_encoder", layers, w), ("text_encoder", text_layers, d)):
        for i in range(n):
            b = f"{prefix}.transformer.resblocks.{i}."
            keys.update({b + "attn.in_proj_weight": (3 * c, c), b + "attn.in_proj_bias": (3 * c,),
                         b + "attn.out_proj.weight": (c, c), b + "attn.out_proj.bias": (c,),
                         b + "ln_1.weight": (c,), b + "ln_1.bias": (c,), b + "ln_2.weight": (c,), b + "ln_2.bias": (c,),
                         b + "mlp.c_fc.weight": (4 * c, c), b + "mlp.c_fc.bias": (4 * c,),
                         b + "mlp.c_proj.weight": (c, 4 * c), b + "mlp.c_proj.bias": (c,)})
    return keys


B16 = released_layout(768, 12, 16, 14, 512, 512, 12)
TINY = released_layout(64, 2, 8, 4, 32, 64, 2)


def _model_shapes(model):
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes["temp"] = ()  # a (1,) parameter in msta (DeepSpeed), [] in the files
    return shapes


def test_b16_module_has_exactly_the_released_keys_and_shapes():
    with torch.device("meta"):
        model = ViCLIP(VICLIP_SIZES["viclip-b16"], "viclip-b16")
    assert _model_shapes(model) == B16
    assert sum(torch.Size(s).numel() for s in B16.values()) == 149_603_841
    with torch.device("meta"):
        l14 = ViCLIP(VICLIP_SIZES["viclip-l14"], "viclip-l14")
    assert _model_shapes(l14) == released_layout(1024, 24, 14, 16, 768, 768, 12)


def _random_checkpoint(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) * 0.05 for k, s in layout.items()}
    state["temp"] = torch.tensor(0.0125)
    return state


@pytest.mark.parametrize("wrap", ["model", "module", "module-prefix", "flat-safetensors"])
def test_released_layout_loads_strictly(tmp_path, wrap):
    state = _random_checkpoint(TINY)
    if wrap == "flat-safetensors":
        path = tmp_path / "model.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "ViCLIP-tiny.pth"
        if wrap == "model":  # ViCLIP's own saves: {"model", "optimizer", ...}
            torch.save({"model": state, "epoch": 3, "global_step": 10}, path)
        elif wrap == "module":
            torch.save({"module": state}, path)
        else:
            torch.save({"model": {"module." + k: v for k, v in state.items()}}, path)
    model = build_model(ModelCfg(name="viclip-tiny", pretrained=str(path), msta=MstaCfg(enabled=False)))
    got = model.clip.state_dict()
    for k, v in state.items():
        assert torch.equal(got[k].reshape(v.shape), v), k
    assert float(model(with_classes=False).logit_scale) == pytest.approx(1 / 0.0125)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = _random_checkpoint(TINY)
    del state["vision_encoder.ln_post.bias"]
    state["vision_encoder.mask_token"] = torch.zeros(64)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=r"missing keys \['vision_encoder.ln_post.bias'\] \(1\), unexpected keys "
                                         r"\['vision_encoder.mask_token'\] \(1\)"):
        build_model(ModelCfg(name="viclip-tiny", pretrained=str(path), msta=MstaCfg(enabled=False)))


def test_size_is_detected_and_checked_against_the_name():
    with torch.device("meta"):
        b16 = {k: torch.empty(s) for k, s in B16.items()}
    found = detect_size(b16)
    assert (found.width, found.layers, found.patch, found.image, found.embed, found.frames, found.context) == \
        (768, 12, 16, 224, 512, 8, 32)
    assert found.heads == 12 and found.text_heads == 8
    with pytest.raises(ValueError, match=r"the file is not viclip-l14: width 768 \(expected 1024\).*"
                                         r"set model.name: viclip-b16"):
        _check_size("viclip-l14", VICLIP_SIZES["viclip-l14"], found, "b16.pth")


def test_a_b16_file_for_the_tiny_name_is_refused(tmp_path):
    state = _random_checkpoint(released_layout(96, 2, 8, 4, 32, 64, 2))  # another width than viclip-tiny
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"the file is not viclip-tiny: width 96 \(expected 64\)"):
        build_model(ModelCfg(name="viclip-tiny", pretrained=str(path)))


def test_user_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file.*gated downloads: Hugging Face OpenGVLab/ViCLIP"):
        build_model(ModelCfg(name="viclip-b16", pretrained="InternVid-10M-FLT"))
    with pytest.raises(ConfigError, match="viclip-tiny was trained with QuickGELU"):
        build_model(ModelCfg(name="viclip-tiny", quick_gelu=False))
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="not a ViCLIP state dict"):
        read_state_dict(path)


def test_loading_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": Evil()}}, path)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        read_state_dict(path)
