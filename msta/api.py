"""The Python API: load trained adapters (or a frozen CLIP) once, then classify, predict and embed videos and texts.

    import msta
    model = msta.load("runs/fewshot_hmdb/best")              # adapters: a folder, hf-hub:org/name, an old .pt
    model = msta.load("ViT-B-16", pretrained="openai")        # or frozen CLIP (no adapters)
    preds = model.predict(["a.mp4", "b.mp4"], topk=3)         # labels default to the checkpoint's classes
    probs = model.classify(["a.mp4"], labels=["juggling", "knitting"])   # (N, C) probabilities
    v = model.encode_video(["a.mp4"])                          # (N, E) L2-normalised
    t = model.encode_text(["a video of juggling", "a video of knitting"])   # (M, E) L2-normalised
    sims = v @ t.T

Videos are file paths, or decoded tensors: uint8 frames (T, H, W, 3) as a decoder returns them (sampled and
preprocessed like a file), or already preprocessed float clips (T, 3, S, S) / views (V, T, 3, S, S). The device and
the precision follow ``msta.devices`` (CUDA when present; the training precision under autocast on a GPU; fp32 on
the CPU). Everything heavy is imported on first use, so ``import msta`` stays light.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from msta.errors import UsageError

__all__ = ["VideoModel", "load"]

_logger = logging.getLogger(__name__)

Video = Union[str, Path, Tensor]
DEFAULT_TEMPLATES = ("a video of {}.",)


def _is_adapters_spec(spec: str | Path, pretrained: Optional[str]) -> bool:
    from msta.adapters_io import HUB_PREFIX

    text = str(spec)
    if pretrained is not None:
        return False
    return text.startswith(HUB_PREFIX) or Path(text).expanduser().exists() or text.endswith(".pt") \
        or "/" in text or "\\" in text


def load(spec: str | Path, pretrained: Optional[str] = None, *, device: Optional[str | torch.device] = None,
         precision: Optional[str] = None, cfg: Optional[str | Path] = None,
         opts: Sequence[str] = ()) -> "VideoModel":
    """Loads adapters, or a frozen model by name, ready for inference.

    Args:
        spec: adapters (an adapters folder such as ``runs/x/best``, a Hub cache entry, ``hf-hub:org/name``, an old
            ``.pt``), or a model name (``"ViT-B-16"``, ``"msta-tiny"``, ...) for the frozen model without adapters.
        pretrained: with a model name: the open_clip tag or a local weights file (``"openai"``); giving it always
            means a model name (an open_clip ``hf-hub:`` model takes ``pretrained=""``).
        device: "auto" (default: CUDA when present), "cpu", "cuda", "cuda:N" or a ``torch.device``.
        precision: "fp32", "bf16" or "fp16" under autocast on a GPU (default: the run's ``train.precision``);
            the CPU always runs fp32.
        cfg: an experiment YAML whose model, data (sampling) and eval (views) sections override the checkpoint's.
        opts: dotted overrides, e.g. ``["eval.views.clips=2"]``.

    Raises:
        FileNotFoundError, ValueError (``msta.errors.UserError``): the adapters or config cannot be read, or the
        model name is unknown (with close names).
    """
    from msta.config import ExperimentCfg, ModelCfg, apply_overrides, config_from_dict, config_to_dict
    from msta.devices import select_device
    from msta.eval.loading import build_eval_model, read_checkpoint, resolve_config

    device = device if isinstance(device, torch.device) else select_device(device)
    ckpt = None
    if _is_adapters_spec(spec, pretrained):
        ckpt = read_checkpoint(spec)
        config = resolve_config(str(cfg) if cfg else None, ckpt, list(opts))
    elif cfg:
        config = resolve_config(str(cfg), None, list(opts))
        config = config_from_dict({**config_to_dict(config), "model": {**config_to_dict(config.model),
                                                                       "name": str(spec), "pretrained": pretrained}})
    else:
        base = config_to_dict(ExperimentCfg(model=ModelCfg(name=str(spec), pretrained=pretrained)))
        config = config_from_dict(apply_overrides(base, list(opts)))
    from msta.cli.weights import ensure_pretrained_available

    # uncached weights and no network: one message at once, not huggingface_hub's retries; the process is not
    # switched to offline mode (a library call must not change how the rest of the notebook reaches the Hub)
    ensure_pretrained_available(config.model.name, config.model.pretrained, offline_when_cached=False,
                                what="pretrained" if ckpt is None and not cfg else "model.pretrained")
    model = build_eval_model(config.model, ckpt, device=device)
    return VideoModel(model, config, ckpt, device=device, precision=precision)


class VideoModel:
    """A ``VideoCLIP`` placed on a device with its config and classes, for inference (see the module example).

    Attributes:
        model: the ``VideoCLIP`` (eval mode, on ``device``).
        cfg: the ``ExperimentCfg`` it was built from (data: decoding and sampling; eval: test views).
        checkpoint: the ``LoadedCheckpoint`` (None for a frozen model).
        device: where it runs; dtype: the autocast dtype (None: fp32).
        classes: the checkpoint's readable class names (empty for a frozen model or a caption run).
        templates: the prompt templates classes are wrapped in.
    """

    def __init__(self, model, cfg, checkpoint=None, *, device: torch.device, precision: Optional[str] = None):
        from msta.devices import autocast_dtype

        self.model, self.cfg, self.checkpoint, self.device = model, cfg, checkpoint, device
        self.dtype = autocast_dtype(device, precision or cfg.train.precision)
        self.classes: list[str] = list(checkpoint.class_names) if checkpoint is not None else []
        self.templates: list[str] = (list(checkpoint.templates) if checkpoint is not None and checkpoint.templates
                                     else list(DEFAULT_TEMPLATES))
        self._bank = None

    def __repr__(self) -> str:
        where = self.checkpoint.path if self.checkpoint is not None else "frozen, no adapters"
        return (f"VideoModel({self.cfg.model.name}, {self.cfg.model.pretrained or 'random init'}, {where}; "
                f"{len(self.classes)} classes, {self.device}, {self.dtype or 'fp32'})")

    # ------------------------------------------------------------------------------------------------ inputs

    def _autocast(self):
        from msta.devices import autocast

        return autocast(self.device, self.dtype)

    @property
    def _image_size(self) -> int:
        size = self.model.image_size
        return size if isinstance(size, int) else int(size[0])

    def views(self, video: Video) -> Tensor:
        """One video as the model's input: (V, T, 3, S, S) CLIP-normalised views (V = clips x crops of cfg.eval).

        Args:
            video: a path; uint8 frames (N, H, W, 3); a float clip (T, 3, S, S); or float views (V, T, 3, S, S).

        Raises:
            msta.data.decoding.VideoDecodeError: a file that cannot be read (``.reason`` says why).
            ValueError: a tensor of another shape or dtype.
        """
        if isinstance(video, (str, Path)):
            from msta.eval.predict import read_views

            return read_views(video, num_frames=self.model.num_frames, image_size=self._image_size,
                              mean=self.model.image_mean, std=self.model.image_std, data=self.cfg.data,
                              views=self.cfg.eval.views)
        if not isinstance(video, Tensor):
            raise ValueError(f"a video is a path or a tensor, got {type(video).__name__}")
        if video.dtype == torch.uint8:
            return self._frames_to_views(video)
        if video.ndim == 4 and video.shape[1] == 3:
            return video.unsqueeze(0).float()
        if video.ndim == 5 and video.shape[2] == 3:
            return video.float()
        raise ValueError(f"expected uint8 frames (N, H, W, 3), a float clip (T, 3, S, S) or float views "
                         f"(V, T, 3, S, S), got {video.dtype} {tuple(video.shape)}")

    def _frames_to_views(self, frames: Tensor) -> Tensor:
        from msta.data.sampling import sample_views
        from msta.data.transforms import EvalTransform

        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be (N, H, W, 3) as a decoder returns them, got {tuple(frames.shape)}")
        t, data, views = self.model.num_frames, self.cfg.data, self.cfg.eval.views
        transform = EvalTransform(self._image_size, crops=views.crops, mean=self.model.image_mean,
                                  std=self.model.image_std, resize=data.eval_resize)
        clips = sample_views(frames.shape[0], t, views.clips, sampling=data.sampling, stride=data.stride)
        chw = frames.permute(0, 3, 1, 2)
        return torch.cat([transform(chw[torch.tensor(c, dtype=torch.long)]) for c in clips])

    @staticmethod
    def _as_list(videos) -> list:
        """One video (a path or one tensor) or a sequence of them -> a list."""
        return [videos] if isinstance(videos, (str, Path, Tensor)) else list(videos)

    # ------------------------------------------------------------------------------------------------ embeddings

    @torch.no_grad()
    def _encode_views(self, views: Tensor) -> Tensor:
        """(V, T, 3, S, S) -> (V, E) normalised view embeddings (float32, on the device)."""
        with self._autocast():
            return self.model.encode_video(views.to(self.device, torch.float32)).float()

    @torch.no_grad()
    def encode_video(self, videos: Video | Sequence[Video]) -> Tensor:
        """Video embeddings: each video's view embeddings averaged and L2-normalised.

        Args:
            videos: one video or a list (see ``views``).

        Returns:
            (N, E) float32 on the CPU, rows of unit length.
        """
        out = [torch.nn.functional.normalize(self._encode_views(self.views(v)).mean(0), dim=-1)
               for v in self._as_list(videos)]
        return torch.stack(out).cpu()

    @torch.no_grad()
    def encode_text(self, texts: str | Sequence[str]) -> Tensor:
        """Text embeddings of the (adapted) text branch.

        Args:
            texts: one string or a list, e.g. ``["a video of juggling", "a video of knitting"]``.

        Returns:
            (M, E) float32 on the CPU, rows of unit length.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("encode_text takes a string or a non-empty list of strings")
        with self._autocast():
            return self.model.encode_text(self.model.tokenize(texts).to(self.device)).float().cpu()

    # ------------------------------------------------------------------------------------------------ classes

    def _labels(self, labels: Optional[Sequence[str]]) -> list[str]:
        if labels is None:
            if not self.classes:
                raise UsageError("this model has no classes of its own (a frozen model or a caption run): pass "
                                 "labels=[...] with the class names to choose from")
            return list(self.classes)
        labels = [labels] if isinstance(labels, str) else [str(n).strip() for n in labels]
        if not labels or not all(labels):
            raise UsageError("labels: give one or more non-empty class names")
        dup = sorted({n for n in labels if labels.count(n) > 1})
        if dup:
            raise UsageError(f"labels: duplicate class names {dup}")
        return labels

    @torch.no_grad()
    def _class_embeddings(self, labels: list[str], templates: Optional[Sequence[str]]) -> Tensor:
        from msta.eval.evaluator import ClassBank

        if self._bank is None:
            self._bank = ClassBank(self.model)
        with self._autocast():
            return self._bank(labels, list(templates or self.templates)).to(self.device)

    @torch.no_grad()
    def _probs(self, views: Tensor, emb: Tensor) -> Tensor:
        from msta.eval.evaluator import logit_scale_of
        from msta.eval.metrics import aggregate_views

        with self._autocast():
            scale = logit_scale_of(self.model).to(self.device)
        logits = scale * self._encode_views(views) @ emb.t()                   # (V, C)
        return (aggregate_views(logits[None])[0] / views.shape[0]).cpu()         # mean probability over views

    @torch.no_grad()
    def classify(self, videos: Video | Sequence[Video], labels: Optional[Sequence[str]] = None, *,
                 templates: Optional[Sequence[str]] = None) -> Tensor:
        """Class probabilities of each video (softmax over ``labels``, averaged over the views).

        Args:
            videos: one video or a list (see ``views``).
            labels: readable class names (default: the checkpoint's classes).
            templates: prompt templates (default: the checkpoint's, else "a video of {}.").

        Returns:
            (N, C) float32 probabilities, columns in the order of ``labels``.

        Raises:
            VideoDecodeError: a file that cannot be read (``predict`` reports such files instead).
        """
        names = self._labels(labels)
        emb = self._class_embeddings(names, templates)
        return torch.stack([self._probs(self.views(v), emb) for v in self._as_list(videos)])

    @torch.no_grad()
    def predict(self, videos: Video | Sequence[Video], labels: Optional[Sequence[str]] = None, topk: int = 5, *,
                templates: Optional[Sequence[str]] = None) -> list:
        """The top-k classes of each video, best first.

        Args:
            videos: one video or a list (see ``views``).
            labels: readable class names (default: the checkpoint's classes).
            topk: classes per video (capped at the number of labels).
            templates: prompt templates (default: the checkpoint's, else "a video of {}.").

        Returns:
            One ``msta.eval.predict.Prediction`` per video, in order: ``.top`` = [(name, probability), ...], or
            ``.error`` saying why a file could not be read (the other videos are still predicted).
        """
        from msta.data.decoding import VideoDecodeError
        from msta.eval.predict import Prediction

        if not isinstance(topk, int) or topk < 1:
            raise UsageError(f"topk must be a positive integer, got {topk!r}")
        names = self._labels(labels)
        emb = self._class_embeddings(names, templates)
        k = min(topk, len(names))
        out = []
        for i, video in enumerate(self._as_list(videos)):
            name = str(video) if isinstance(video, (str, Path)) else f"<tensor {i}>"
            try:
                views = self.views(video)
            except VideoDecodeError as e:
                detail = f" ({e.detail})" if e.detail else ""
                out.append(Prediction(name, error=f"cannot read {video}: {e.reason}{detail}"))
                continue
            top = self._probs(views, emb).topk(k)
            out.append(Prediction(name, [(names[j], float(p)) for p, j in zip(top.values, top.indices.tolist())]))
        return out
