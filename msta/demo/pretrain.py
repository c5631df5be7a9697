"""Pretrains the tiny `msta-demo` open_clip CLIP on synthetic captioned frames, so the demo needs no download.

The model sees single frames of coloured shapes with captions ("a red square on the left", "a video of a small
blue circle.") and learns them contrastively. It ends up recognising colour + shape zero-shot, like a real CLIP
recognises objects, and knows nothing about motion: that is what the video adapters must add. The state dict is
cached under a name derived from every pretraining setting, so changing a setting retrains and nothing stale is
reused; `open_clip.create_model("msta-demo", pretrained=path)` loads it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from msta.data.synthetic import (_POS_PHRASE, _SIZE_WORDS, DEFAULT_COLOURS, DEFAULT_SHAPES, SHAPES,
                                 caption_compatibility, sample_captioned_frames)
# CLIP's own normalisation, so that the demo model takes the same inputs as any open_clip model
from msta.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["PretrainCfg", "pretrain_clip", "ensure_pretrained", "zero_shot_accuracy", "appearance_prompts",
           "frames_to_tensor", "multi_positive_clip_loss", "reference_captions"]

_logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class PretrainCfg:
    """Pretraining settings; all of them name the cache file."""
    model: str = "msta-demo"          # open_clip config name (registered by msta.models)
    steps: int = 300                  # measured: 94 % at step 200, 100 % at 300 (batch 128, lr 1e-3)
    batch_size: int = 128
    lr: float = 1e-3                  # AdamW peak, linear warm-up then cosine to 0 (3e-3 never learned shape)
    warmup: int = 20
    weight_decay: float = 0.05
    noise_std: float = 3.0            # pixel noise of the frames, as in the synthetic videos
    colours: tuple[str, ...] = DEFAULT_COLOURS
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    seed: int = 0
    eval_frames: int = 480            # held-out frames for the zero-shot accuracy in the stats
    logit_scale_init: float = 1 / 0.07  # initial (learnable) temperature, open_clip's default

    def key(self) -> str:
        """A short hash of every setting and of the frame renderer and captioner (the cache key)."""
        blob = json.dumps({**dataclasses.asdict(self), "renderer": _renderer_fingerprint()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _renderer_fingerprint() -> str:
    """The source of what draws and captions the pretraining frames, and its constants: editing any of them (e.g.
    the object size range) changes the cache key, so a stale tiny CLIP is never reused."""
    from msta.data import synthetic as S

    parts = [inspect.getsource(f) for f in (S.sample_captioned_frames, S.render_shapes, S._backgrounds,
                                             S.caption_compatibility)]
    parts.append(repr((S.COLOURS, S.SHAPES, S._POS_PHRASE, S._SIZE_WORDS, S._RADIUS)))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def frames_to_tensor(images: Any) -> torch.Tensor:
    """(N, 3, H, W) uint8 array or tensor -> (N, 3, H, W) float32 normalised with the CLIP mean/std."""
    x = torch.as_tensor(images).float().div_(255.0)
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def multi_positive_clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                             positives: torch.Tensor) -> torch.Tensor:
    """ClipLoss with several positives per row: cross entropy against the uniform distribution over positives.

    Plain InfoNCE treats every other caption in the batch as a negative; with a small vocabulary "a red square"
    truly describes several frames of a batch, and pushing those apart would fight the labels.

    Args:
        image_emb: (B, E) L2-normalised.
        text_emb: (B, E) L2-normalised; text i is the caption of image i.
        logit_scale: () or (1,) already exp()'d.
        positives: (B, B) bool, positives[i, j] = caption j describes image i (the diagonal is True).

    Returns:
        () mean of the image->text and text->image losses.
    """
    logits = logit_scale * image_emb @ text_emb.t()
    pos = positives.float()
    loss_i = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(pos.t() / pos.t().sum(1, keepdim=True) * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def appearance_prompts(colours: Sequence[str] = DEFAULT_COLOURS, shapes: Sequence[str] = DEFAULT_SHAPES,
                       template: str = "a video of {}.") -> tuple[list[str], list[str]]:
    """The appearance classes (colour-major, as `task_classes("appearance")`) and one prompt per class."""
    names = [f"a {c} {s}" for c in colours for s in shapes]
    return [f"{c}_{s}" for c in colours for s in shapes], [template.format(n) for n in names]


def reference_captions(n: int = 256, seed: int = 4242) -> list[str]:
    """The first ``n`` distinct captions drawn from the tiny CLIP's pretraining distribution: the demo's references.

    They play the part that a generic concept list plays for a real CLIP in ``loss.distill``: what the frozen model
    knows in general. A fresh seed, so they are new draws from the pretraining caption distribution, not its batches.
    """
    found: dict[str, None] = {}
    for attempt in range(8):
        found.update(dict.fromkeys(sample_captioned_frames(4 * n, seed + attempt)[1]))
        if len(found) >= n:
            return list(found)[:n]
    raise ValueError(f"the pretraining captions have only {len(found)} distinct texts; ask for n <= {len(found)}")


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, tokenizer: Any, *, colours: Sequence[str] = DEFAULT_COLOURS,
                       shapes: Sequence[str] = DEFAULT_SHAPES, n: int = 480, seed: int = 12345,
                       noise_std: float = 3.0) -> float:
    """Zero-shot colour + shape accuracy of an open_clip CLIP on fresh synthetic frames (held-out seed).

    Returns:
        Top-1 accuracy in [0, 1] over `len(colours) * len(shapes)` classes.
    """
    was_training = model.training
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    _, prompts = appearance_prompts(colours, shapes)
    text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    images, _, attrs = sample_captioned_frames(n, seed, size=size, noise_std=noise_std, colours=colours,
                                               shapes=shapes, with_attributes=True)
    shape_idx = torch.tensor([list(shapes).index(SHAPES[k]) for k in attrs["shape"]])
    labels = torch.as_tensor(attrs["colour"]) * len(shapes) + shape_idx
    image = F.normalize(model.encode_image(frames_to_tensor(images)), dim=-1)
    pred = (image @ text.t()).argmax(1)
    model.train(was_training)
    return float((pred == labels).float().mean())


_CAPTION_WORDS = ("a photo of a video of.", *_SIZE_WORDS, *_POS_PHRASE.values())


class _CaptionTokens:
    """Tokenises captions through a cache: the caption vocabulary has a few thousand distinct strings at most."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.cache, self.used = tokenizer, {}, None

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        new = sorted({c for c in captions if c not in self.cache})
        if new:
            tokens = self.tokenizer(new)
            if self.used is not None and not torch.isin(tokens, self.used).all():
                raise ValueError(f"a caption uses a token outside the pretraining vocabulary: {new}")
            self.cache.update(zip(new, tokens))
        return torch.stack([self.cache[c] for c in captions])

    def used_ids(self, cfg: PretrainCfg) -> torch.Tensor:
        """Sorted token ids that captions and appearance prompts can contain, with the padding id 0.

        CLIP's BPE splits text into words first, so the ids of a caption are those of its words (and punctuation).
        """
        words = {w for text in _CAPTION_WORDS for w in text.replace(".", " .").split()}
        words |= set(cfg.colours) | set(cfg.shapes)
        ids = self.tokenizer(sorted(words)).unique()
        return torch.unique(torch.cat([ids, torch.zeros(1, dtype=ids.dtype)]))

def _merged(full: torch.nn.Embedding, compact: torch.nn.Embedding, used: torch.Tensor) -> torch.nn.Embedding:
    with torch.no_grad():
        full.weight[used] = compact.weight.detach()
    return full


def _curve_point(model, full_embedding, used, tokenizer, cfg, step, seconds, losses) -> tuple[int, float, float]:
    compact = model.token_embedding
    model.token_embedding = _merged(full_embedding, compact, used)
    acc = zero_shot_accuracy(model, tokenizer, colours=cfg.colours, shapes=cfg.shapes, noise_std=cfg.noise_std,
                             n=cfg.eval_frames)
    model.token_embedding = compact
    model.train()
    return step, round(seconds, 1), acc


def _lr_at(step: int, cfg: PretrainCfg) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain_clip(cfg: PretrainCfg = PretrainCfg(), *, progress: bool = True,
                  eval_every: int = 0) -> tuple[torch.nn.Module, dict]:
    """Trains a tiny open_clip CLIP from scratch on captioned synthetic frames.

    Args:
        cfg: the settings.
        progress: show a tqdm bar (loss in the postfix).
        eval_every: also measure the zero-shot accuracy every this many steps (0: only at the end); the
            evaluations are left out of "seconds".

    Returns:
        (model in eval mode, stats: {"seconds", "final_loss", "first_loss", "zero_shot_acc", "key"}, and with
        `eval_every` "curve": [(step, training seconds, accuracy), ...]).
    """
    import open_clip
    from tqdm.auto import tqdm

    from msta.models.factory import register_model_configs

    register_model_configs()
    torch.manual_seed(cfg.seed)  # open_clip initialises its weights from the global generator
    model = open_clip.create_model(cfg.model, pretrained=None)
    tokenizer = open_clip.get_tokenizer(cfg.model)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    with torch.no_grad():
        model.logit_scale.fill_(math.log(cfg.logit_scale_init))
    full_embedding = model.token_embedding
    tokens_of = _CaptionTokens(tokenizer)
    # Only the few dozen token ids of the captions get gradients; a compact table of those rows trains exactly as
    # the full (49408, width) one would (AdamW leaves rows without gradient unchanged: no weight decay on
    # embeddings) at a fraction of the optimiser's cost. Ids are remapped monotonically, so the argmax (EOT)
    # pooling of encode_text still finds the end token. The rows are written back after training.
    used = tokens_of.used = tokens_of.used_ids(cfg)
    remap = torch.zeros(full_embedding.num_embeddings, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    model.token_embedding = torch.nn.Embedding.from_pretrained(full_embedding.weight.detach()[used].clone(),
                                                               freeze=False)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    seconds, losses, curve = 0.0, [], []
    bar = tqdm(range(cfg.steps), desc="pretraining tiny CLIP", unit="step", disable=not progress)
    start = time.perf_counter()
    for step in bar:
        images, captions, attrs = sample_captioned_frames(cfg.batch_size, gen, size=size, noise_std=cfg.noise_std,
                                                          colours=cfg.colours, shapes=cfg.shapes,
                                                          with_attributes=True)
        positives = torch.as_tensor(caption_compatibility(attrs))
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        image_emb = F.normalize(model.encode_image(frames_to_tensor(images)), dim=-1)
        text_emb = F.normalize(model.encode_text(remap[tokens_of(captions)]), dim=-1)
        loss = multi_positive_clip_loss(image_emb, text_emb, model.logit_scale.exp(), positives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP's clamp: a logit scale above 100 makes the softmax unstable
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < cfg.steps:
            seconds += time.perf_counter() - start  # the learning curve's evaluations are not training time
            curve.append(_curve_point(model, full_embedding, used, tokenizer, cfg, step + 1, seconds, losses))
            _logger.info("step %d (%.0f s): zero-shot colour+shape %.1f%%", step + 1, seconds, 100 * curve[-1][2])
            start = time.perf_counter()
    seconds += time.perf_counter() - start
    model.token_embedding = _merged(full_embedding, model.token_embedding, used)
    model.eval()
    acc = zero_shot_accuracy(model, tokenizer, colours=cfg.colours, shapes=cfg.shapes, noise_std=cfg.noise_std,
                             n=cfg.eval_frames)
    stats = {"seconds": round(seconds, 1), "first_loss": losses[0], "final_loss": sum(losses[-10:]) / len(losses[-10:]),
             "zero_shot_acc": acc, "key": cfg.key()}
    if curve:
        stats["curve"] = curve + [(cfg.steps, round(seconds, 1), acc)]
    _logger.info("pretrained %s in %.0f s: loss %.3f -> %.3f, zero-shot colour+shape accuracy %.1f%%", cfg.model,
                 seconds, stats["first_loss"], stats["final_loss"], 100 * acc)
    return model, stats


def ensure_pretrained(cache_dir: str | Path, cfg: PretrainCfg = PretrainCfg(), *,
                      progress: bool = True) -> tuple[Path, dict]:
    """Returns the cached weights for `cfg`, pretraining them first if the file does not exist.

    Files: `<cache_dir>/<model>-<key>.pt` (the state dict) and `.json` beside it (settings and stats).

    Returns:
        (weights path, stats; {"cached": True, ...} when the file was already there).
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cfg.model}-{cfg.key()}.pt"
    meta = path.with_suffix(".json")
    if path.is_file():
        stats = json.loads(meta.read_text())["stats"] if meta.is_file() else {}
        _logger.info("using cached pretrained %s: %s", cfg.model, path)
        return path, {**stats, "cached": True}
    model, stats = pretrain_clip(cfg, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: an interrupted run never leaves a truncated cache file behind
    meta.write_text(json.dumps({"settings": dataclasses.asdict(cfg), "stats": stats}, indent=1))
    return path, {**stats, "cached": False}
