"""Building an open_clip CLIP for msta: name and weight-source checks, and the activation its weights were trained with.

open_clip's plain ``ViT-B-16`` config builds ``nn.GELU`` while the OpenAI weights (and e.g. MetaCLIP, DFN) were
trained with QuickGELU (``x * sigmoid(1.702 x)``); open_clip only warns about the mismatch. Every model msta builds
gets the activation of its weights (:func:`resolve_quick_gelu`):

* an open_clip pretrained tag: the tag's own declaration (``open_clip.get_pretrained_cfg(name, tag)['quick_gelu']``);
* a local weights file: ``model.quick_gelu`` when true/false; with ``auto`` a file in the Hugging Face cache entry
  of a known tag (where open_clip downloads it) takes that tag's value, any other file the model config's own
  value (False for ``ViT-B-16``, True for ``ViT-B-16-quickgelu``) with a logged hint: a state dict does not record
  its activation;
* random init: ``model.quick_gelu`` when true/false, else the model config's value.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from msta.config import ConfigError

__all__ = ["QuickGeluChoice", "resolve_quick_gelu", "resolve_pretrained", "check_name", "check_supported",
           "create_clip", "SCHEMES"]

_logger = logging.getLogger(__name__)

SCHEMES = ("hf-hub:", "local-dir:")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class QuickGeluChoice:
    """The activation decision: ``quick_gelu`` and a readable reason (logged by the factory)."""
    quick_gelu: bool
    reason: str

    @property
    def activation(self) -> str:
        return "QuickGELU" if self.quick_gelu else "GELU"


def check_name(name: str) -> None:
    """Raises a ConfigError with close names when ``name`` is not an open_clip model (schemes pass through)."""
    import open_clip
    if name.startswith(SCHEMES) or name in open_clip.list_models():
        return
    names = open_clip.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ConfigError(f"model.name={name!r} is not an open_clip model; {hint}"
                      f"see open_clip.list_models() ({len(names)} names, e.g. 'ViT-B-16', 'msta-tiny'), "
                      "or a ViCLIP name (viclip-b16, viclip-l14, viclip-tiny)")


def check_supported(name: str) -> None:
    """Rejects, before anything is built, open_clip models whose towers msta cannot adapt.

    msta adapts open_clip's plain ``CLIP`` with its own ViT (``VisionTransformer``) and text transformer. Configs
    with a timm vision tower (SigLIP, EVA, ConvNeXt ...), a Hugging Face text tower, ``custom_text`` (CoCa,
    SigLIP) or a ModifiedResNet (``RN50`` ...) are refused here with the reason.
    """
    import open_clip
    if name.startswith(SCHEMES):
        return  # the config lives in the hub / folder: checked when the towers are looked at
    cfg = open_clip.get_model_config(name) or {}
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    why = None
    if "timm_model_name" in vision:
        why = f"its vision tower is a timm model ({vision['timm_model_name']!r}, e.g. SigLIP / EVA)"
    elif isinstance(vision.get("layers"), (list, tuple)):
        why = "its vision tower is a ModifiedResNet, not a ViT"
    elif "hf_model_name" in text:
        why = f"its text tower is a Hugging Face model ({text['hf_model_name']!r})"
    elif cfg.get("custom_text") or "multimodal_cfg" in cfg:
        why = "it is a CustomTextCLIP / CoCa model (custom text tower)"
    if why:
        raise ConfigError(f"model.name={name!r} is not supported: {why}. msta adapts open_clip's plain CLIP ViT "
                          "models (e.g. ViT-B-32, ViT-B-16, ViT-L-14 and their -quickgelu variants) and ViCLIP "
                          "(viclip-b16, viclip-l14)")


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith((".", "~")) or value.lower().endswith(_WEIGHT_SUFFIXES)


def resolve_pretrained(name: str, pretrained: Optional[str]) -> Optional[str]:
    """Returns what to pass to open_clip.create_model as ``pretrained``, or raises a ValueError that says why."""
    if pretrained is None or pretrained == "":
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if _looks_like_path(pretrained):
        raise ConfigError(f"model.pretrained={pretrained!r}: no such file ({path.resolve()}); give an existing "
                         "weights file, an open_clip pretrained tag, or null for random init")
    import open_clip
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise ConfigError(f"model.pretrained={pretrained!r} is neither a file nor an open_clip tag of {name!r}; "
                         f"tags for {name!r}: {tags or 'none'}")
    return pretrained


def _tag_of_cached_file(name: str, path: str) -> Optional[str]:
    """The tag of ``name`` whose Hugging Face cache entry (``models--org--repo``) holds ``path``, if any."""
    import open_clip
    parts = set(Path(path).resolve().parts) | set(Path(path).parts)
    for tag in open_clip.list_pretrained_tags_by_model(name):
        hub = (open_clip.get_pretrained_cfg(name, tag) or {}).get("hf_hub", "")
        if hub and "models--" + hub.strip("/").replace("/", "--") in parts:
            return tag
    return None


def resolve_quick_gelu(name: str, pretrained: Optional[str], setting: Union[bool, str] = "auto") -> QuickGeluChoice:
    """Decides the activation of both towers for ``name`` with weights ``pretrained`` (see the module docstring).

    Args:
        name: open_clip model name.
        pretrained: what :func:`resolve_pretrained` returned (None, an existing file, or a tag of ``name``).
        setting: ``model.quick_gelu``: True, False or "auto".

    Returns:
        The decision and its reason.

    Raises:
        ConfigError: ``setting`` contradicts the tag's declaration (a tag's weights have one activation).
    """
    import open_clip
    own = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False)) if not name.startswith(
        SCHEMES) else False
    if pretrained is not None and not Path(pretrained).is_file():  # an open_clip tag
        declared = bool((open_clip.get_pretrained_cfg(name, pretrained) or {}).get("quick_gelu", False))
        if setting != "auto" and bool(setting) != declared:
            raise ConfigError(f"model.quick_gelu={str(setting).lower()} contradicts the weights: {name!r} tag "
                              f"{pretrained!r} was trained with {'QuickGELU' if declared else 'GELU'}; "
                              "set model.quick_gelu: auto")
        return QuickGeluChoice(declared, f"declared by tag {pretrained!r}")
    if setting != "auto":
        return QuickGeluChoice(bool(setting), f"model.quick_gelu={str(setting).lower()}")
    if pretrained is None:
        return QuickGeluChoice(own, f"model config {name!r} (random init)")
    tag = _tag_of_cached_file(name, pretrained)
    if tag is not None:
        declared = bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))
        return QuickGeluChoice(declared, f"the file is the cached download of tag {tag!r}")
    return QuickGeluChoice(own, f"model config {name!r}: a weights file does not record its activation; set "
                                "model.quick_gelu: true for OpenAI / MetaCLIP / DFN weights")


def create_clip(name: str, pretrained: Optional[str], quick_gelu: Union[bool, str] = "auto"):
    """Creates the open_clip model with the activation of its weights.

    Returns:
        (model, QuickGeluChoice).
    """
    import open_clip
    check_supported(name)
    choice = resolve_quick_gelu(name, pretrained, quick_gelu)
    if name.startswith(SCHEMES):
        return open_clip.create_model(name), choice
    own = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    kwargs = {"force_quick_gelu": True} if choice.quick_gelu else ({"quick_gelu": False} if own else {})
    return open_clip.create_model(name, pretrained=pretrained, **kwargs), choice
