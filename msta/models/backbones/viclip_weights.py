"""Building ViCLIP and loading released checkpoints from a local file (no download: the files are gated).

Accepted files (``model.pretrained: path``):

* ``.pth`` / ``.pt`` / ``.bin``: a state dict, or a training checkpoint with the weights under ``model`` (ViCLIP's
  own saves and the demo's ``torch.load(path)['model']``) or ``module`` (DeepSpeed); read with
  ``torch.load(weights_only=True)``;
* ``.safetensors``: a flat state dict (the ``-hf`` repositories' ``model.safetensors``).

A leading ``module.`` (DDP) is stripped. The size is detected from the tensor shapes (``conv1`` width and patch,
block count, frames, context, embed dim) and must match ``model.name``; the key check is strict and the error lists
the missing and unexpected keys. ``temp`` ([] in the files) becomes the model's (1,) parameter.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from msta.config import ConfigError
from msta.models.backbones.viclip import VICLIP_SIZES, ViCLIP, ViclipSize

__all__ = ["read_state_dict", "detect_size", "load_viclip_state", "build_viclip", "viclip_tokenizer",
           "viclip_state_from_open_clip", "WHERE_TO_GET"]

_logger = logging.getLogger(__name__)

WHERE_TO_GET = ("ViCLIP weights are gated downloads: Hugging Face OpenGVLab/ViCLIP (ViClip-InternVid-10M-FLT.pth, "
                "L/14), OpenGVLab/ViCLIP-B-16-hf and ViCLIP-L-14-hf (model.safetensors), or the InternVideo README's "
                "ViCLIP-B_InternVid-FLT-10M.pth; download one and set model.pretrained to its path")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Reads a ViCLIP weights file into a flat state dict (unwrapped, ``module.`` stripped).

    Raises:
        ValueError: the file holds no state dict (names the file and what it found).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("model", "module"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a ViCLIP state dict (expected tensors, or a checkpoint with them under "
                         f"'model' or 'module'; found {type(state).__name__} with keys {list(state)[:8]})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _blocks(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def detect_size(state: dict[str, Tensor], path: str = "the file") -> ViclipSize:
    """The ViclipSize the tensors of ``state`` describe (heads: width / 64, or the registered size's)."""
    conv = state.get("vision_encoder.conv1.weight")
    text_pos = state.get("text_encoder.positional_embedding")
    if conv is None or conv.ndim != 5 or text_pos is None:
        raise ConfigError(f"{path}: no vision_encoder.conv1.weight of shape [W, 3, 1, P, P] / "
                         "text_encoder.positional_embedding: not a ViCLIP checkpoint")
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = int(round((state["vision_encoder.positional_embedding"].shape[0] - 1) ** 0.5))
    text_width = int(text_pos.shape[1])
    known = next((s for s in VICLIP_SIZES.values() if (s.width, s.patch, s.text_width) == (width, patch, text_width)),
                 None)
    return ViclipSize(
        width=width, layers=_blocks(state, "vision_encoder."),
        heads=known.heads if known else max(1, width // 64), patch=patch, image=grid * patch,
        frames=int(state["vision_encoder.temporal_positional_embedding"].shape[1]),
        embed=int(state["vision_encoder.proj"].shape[1]), text_width=text_width,
        text_layers=_blocks(state, "text_encoder."),
        text_heads=known.text_heads if known else max(1, text_width // 64), context=int(text_pos.shape[0]),
        vocab=int(state["text_encoder.token_embedding.weight"].shape[0]))


def _check_size(name: str, expected: ViclipSize, found: ViclipSize, path: str) -> None:
    keys = ("width", "layers", "patch", "image", "embed", "text_width", "text_layers")
    diff = [f"{k} {getattr(found, k)} (expected {getattr(expected, k)})" for k in keys
            if getattr(found, k) != getattr(expected, k)]
    if diff:
        match = [n for n, s in VICLIP_SIZES.items() if all(getattr(s, k) == getattr(found, k) for k in keys)]
        hint = f"set model.name: {match[0]}" if match else "it is not a size msta registers"
        raise ConfigError(f"model.pretrained={path}: the file is not {name}: {', '.join(diff)}; {hint}")


def load_viclip_state(model: ViCLIP, state: dict[str, Tensor], path: str = "the file") -> None:
    """Loads ``state`` strictly into ``model`` (``temp`` [] -> (1,)); the error lists missing / unexpected keys."""
    state = dict(state)
    if "temp" in state:
        state["temp"] = state["temp"].reshape(1)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        def show(keys):
            return f"{keys[:12]}{' ...' if len(keys) > 12 else ''} ({len(keys)})"
        raise ConfigError(f"model.pretrained={path} does not match {model.name}: missing keys {show(missing)}, "
                         f"unexpected keys {show(unexpected)}; is it a ViCLIP checkpoint of this size?")
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ConfigError(f"model.pretrained={path}: wrong shapes (file vs model): {bad[:10]}")
    model.load_state_dict(state, strict=True)


@functools.lru_cache(maxsize=4)
def viclip_tokenizer(context_length: int = 32):
    """OpenAI CLIP's BPE tokenizer (ftfy, HTML unescape, whitespace, lowercase; SOT 49406 / EOT 49407, pad 0).

    Longer texts are cut to ``context_length`` with EOT forced at the last position (30 content tokens at 32).
    """
    import open_clip
    return open_clip.SimpleTokenizer(context_length=context_length)


def build_viclip(name: str, pretrained: Optional[str], quick_gelu: bool | str = "auto") -> ViCLIP:
    """Builds ViCLIP ``name`` (random init when ``pretrained`` is None, else the file's weights, checked).

    Raises:
        ConfigError: ``quick_gelu`` false, or ``pretrained`` is not a file (a tag: ViCLIP has none).
        ValueError: the file's size differs from ``name``'s, or its keys / shapes do not match.
    """
    if quick_gelu is False:
        raise ConfigError(f"model.quick_gelu=false: {name} was trained with QuickGELU in both towers; "
                          "set model.quick_gelu: auto")
    size = VICLIP_SIZES[name]
    if not pretrained:
        return ViCLIP(size, name)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained={pretrained!r}: no such file ({path.resolve()}). {WHERE_TO_GET}, "
                          "or null for random init")
    state = read_state_dict(path)
    found = detect_size(state, str(path))
    _check_size(name, size, found, str(path))
    if (found.frames, found.context) != (size.frames, size.context):
        _logger.info("%s: the file has %d frames / context %d (registered %d / %d): built as the file says",
                     path, found.frames, found.context, size.frames, size.context)
    model = ViCLIP(dataclasses.replace(size, frames=found.frames, context=found.context, vocab=found.vocab), name)
    load_viclip_state(model, state, str(path))
    _logger.info("%s: loaded %s (%s, %d tensors, temp %.5f)", name, path, found.label, len(state),
                 float(model.temp.detach()))
    return model


def viclip_state_from_open_clip(clip_state: dict[str, Tensor], frames: int = 8, context: int = 32,
                                temp: Optional[float] = None) -> dict[str, Tensor]:
    """Maps an open_clip CLIP ViT state dict to ViCLIP keys (facts §2.3; how ViCLIP was initialised).

    ``visual.*`` -> ``vision_encoder.*`` (conv1 gets a temporal axis of 1), text keys -> ``text_encoder.*``, the
    text positions cut to ``context``, a zero temporal embedding of ``frames``, ``temp = exp(-logit_scale)``.
    """
    out: dict[str, Tensor] = {}
    for k, v in clip_state.items():
        if k == "logit_scale":
            out["temp"] = torch.exp(-v.reshape(())) if temp is None else torch.tensor(float(temp))
        elif k.startswith("visual."):
            sub = k[len("visual."):]
            out["vision_encoder." + sub] = v.unsqueeze(2) if sub == "conv1.weight" else v
        elif k == "positional_embedding":
            out["text_encoder.positional_embedding"] = v[:context]
        elif k != "attn_mask":
            out["text_encoder." + k] = v
    width = clip_state["visual.class_embedding"].shape[0]
    out["vision_encoder.temporal_positional_embedding"] = torch.zeros(1, frames, width)
    return out
