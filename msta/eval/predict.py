"""Open-vocabulary prediction on video files: top-k classes with probabilities, one result per file.

A file that cannot be read yields a ``Prediction`` with ``error`` set and the others are still predicted, so one
bad file never hides the results of the rest.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from msta.config import DataCfg, ViewsCfg
from msta.eval.evaluator import ClassBank, logit_scale_of
from msta.eval.metrics import aggregate_views

__all__ = ["Prediction", "read_views", "predict_files"]

_logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The result for one file: ``top`` = [(class name, probability), ...] best first, or ``error`` why not."""
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def read_views(path: str | Path, *, num_frames: int, image_size: int, mean: Sequence[float], std: Sequence[float],
               data: DataCfg, views: ViewsCfg) -> torch.Tensor:
    """Decodes the test views of one file, as the evaluation datasets do.

    Returns:
        (V, T, C, H, W) float CLIP-normalised views, V = clips x crops.

    Raises:
        msta.data.decoding.VideoDecodeError: missing, empty or undecodable file (``.reason`` says which).
    """
    from msta.data.decoding import VideoDecodeError, open_video
    from msta.data.sampling import sample_views
    from msta.data.transforms import EvalTransform

    transform = EvalTransform(image_size, crops=views.crops, mean=mean, std=std, resize=data.eval_resize)
    reader = open_video(path, backend=data.backend, short_side=getattr(transform, "short_side", None))
    n = len(reader)
    if n < data.min_frames:
        raise VideoDecodeError(path, "too_short", f"{n} frames < data.min_frames={data.min_frames}")
    clips = sample_views(n, num_frames, views.clips, sampling=data.sampling, stride=data.stride)
    frames = reader.get_frames([i for c in clips for i in c]).permute(0, 3, 1, 2)   # one decode for all clips
    return torch.cat([transform(frames[k * num_frames:(k + 1) * num_frames]) for k in range(views.clips)])


@torch.no_grad()
def predict_files(model, paths: Sequence[str | Path], class_names: Sequence[str], templates: Sequence[str], *,
                  topk: int = 5, data: Optional[DataCfg] = None, views: Optional[ViewsCfg] = None,
                  num_frames: Optional[int] = None, precision=None) -> Iterator[Prediction]:
    """Predicts each file in turn.

    Args:
        model: a ``VideoCLIP``.
        paths: video files.
        class_names: readable class names (the prompts' ``{}``).
        templates: prompt templates, ensembled.
        topk: classes reported per file (capped at the number of classes).
        data: decoding and sampling settings (default ``DataCfg()``).
        views: test views (default one clip, one crop).
        num_frames: frames per clip (default the model's).
        precision: a context the model runs under (``msta.devices.autocast``; default none: fp32).

    Yields:
        One ``Prediction`` per path, in order; probabilities are softmax scores averaged over the views.
    """
    from msta.data.decoding import VideoDecodeError

    data, views = data or DataCfg(), views or ViewsCfg()
    size = model.image_size if isinstance(model.image_size, int) else int(model.image_size[0])
    model.eval()
    precision = precision or contextlib.nullcontext()
    with precision:
        emb = ClassBank(model)(class_names, templates)
        scale = logit_scale_of(model)
    k = min(topk, len(class_names))
    for path in paths:
        try:
            video = read_views(path, num_frames=num_frames or model.num_frames, image_size=size,
                               mean=model.image_mean, std=model.image_std, data=data, views=views)
        except VideoDecodeError as e:
            detail = f" ({e.detail})" if e.detail else ""
            yield Prediction(str(path), error=f"cannot read {path}: {e.reason}{detail}")
            continue
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's problem, not the batch's
            yield Prediction(str(path), error=f"cannot read {path}: {type(e).__name__}: {e}")
            continue
        device = next(model.parameters()).device                           # the caller placed the model
        with precision:
            out = model.encode_video(video.to(device)).float()
        logits = scale.float() * out @ emb.float().t()                     # (V, C), in fp32 outside autocast
        probs = aggregate_views(logits[None])[0] / video.shape[0]              # mean probability over views
        top = probs.topk(k)
        yield Prediction(str(path), [(class_names[i], float(p)) for p, i in zip(top.values, top.indices.tolist())])
