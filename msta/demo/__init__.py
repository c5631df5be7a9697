"""The self-contained demo: a tiny image-text CLIP pretrained on synthetic captioned frames, no downloads."""
from msta.demo.pretrain import PretrainCfg, appearance_prompts, ensure_pretrained, pretrain_clip, zero_shot_accuracy

__all__ = ["PretrainCfg", "appearance_prompts", "ensure_pretrained", "pretrain_clip", "zero_shot_accuracy"]
