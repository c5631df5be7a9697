"""Benchmark rows of the folder index (``msta index`` / ``msta search``): embedding throughput and query latency.

- embedding: ``update_index`` on a fresh folder of generated mp4 videos (decode + views + forward + atomic write),
  in videos/s, then the same call again with nothing changed (the cost of a no-op update);
- queries: an index file of N synthetic unit embeddings (N = 1,000 and 100,000; the embeddings do not change what
  the ranking costs): the time to open it, the ranking alone (one matrix product and a top-k) and a whole
  ``VideoIndex.search`` including the text encoder, medians over repeats.
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["IndexSpec", "index_spec", "run_index_bench", "index_table"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSpec:
    """What the index rows measure.

    Attributes:
        model: open_clip model name (random init: speed does not depend on the weights).
        num_frames, image_size: clip shape fed to the model.
        videos: generated videos to embed; video_frames, video_hw: their length and size.
        batch_size: videos per forward.
        sizes: indexed videos of the query rows.
        repeats: timed queries per row (median reported).
    """
    name: str = "index"
    model: str = "ViT-B-16"
    num_frames: int = 8
    image_size: int = 224
    videos: int = 16
    video_frames: int = 32
    video_hw: tuple[int, int] = (240, 320)
    batch_size: int = 4
    sizes: tuple[int, ...] = (1_000, 100_000)
    repeats: int = 20

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IndexSpec":
        d = dict(d)
        d["video_hw"] = tuple(d.get("video_hw", cls.video_hw))
        d["sizes"] = tuple(d.get("sizes", cls.sizes))
        return cls(**d)


def _median_ms(fn, repeats: int) -> float:
    fn()   # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _config(spec: IndexSpec) -> dict:
    from msta.config import ExperimentCfg, config_to_dict

    cfg = config_to_dict(ExperimentCfg())
    cfg["model"].update(name=spec.model, pretrained=None, num_frames=spec.num_frames)
    if spec.model == "msta-tiny":
        cfg["model"]["msta"].update(text_blocks=[2, 2], vision_blocks=[2, 2], dim=16)
    cfg["data"].update(input_size=spec.image_size, num_workers=0)
    return cfg


def run_index_bench(spec: IndexSpec, threads: int = 2) -> dict:
    """Measures the index rows of ``spec``; returns a JSON-able dict (``kind`` "index")."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from msta.data.mp4 import write_mp4
    from msta.index import VideoIndex, load_index_model, update_index
    from msta.index.store import Entry, IndexData, write_index

    torch.set_num_threads(threads)
    out: dict = {"kind": "index", "spec": spec.to_dict(), "threads": torch.get_num_threads(),
                 "device": "cuda" if torch.cuda.is_available() else "cpu"}
    cfg = _config(spec)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_index_model(config_dict=cfg)
        out["device"] = str(model.device)
        folder = tmp / "videos"
        folder.mkdir()
        rng = np.random.default_rng(0)
        h, w = spec.video_hw
        for i in range(spec.videos):
            write_mp4(folder / f"v{i:04d}.mp4", rng.integers(0, 255, (spec.video_frames, h, w, 3), dtype=np.uint8))
        first = update_index(folder, tmp / "idx", model, batch_size=spec.batch_size, progress=False)
        again = update_index(folder, tmp / "idx", model, batch_size=spec.batch_size, progress=False)
        out["embed"] = {"videos": spec.videos, "seconds": first.seconds,
                        "videos_per_s": spec.videos / first.seconds if first.seconds else 0.0,
                        "noop_update_s": again.seconds}
        dim = int(_read_dim(tmp / "idx"))
        g = torch.Generator().manual_seed(0)
        rows = []
        for n in spec.sizes:
            views = F.normalize(torch.randn(n, 1, dim, generator=g), dim=-1)
            entries = [Entry(f"clips/{i:06d}.mp4", 1_000_000 + i, 1_700_000_000_000_000_000 + i) for i in range(n)]
            path = write_index(tmp / f"synthetic_{n}", IndexData(str(folder), model.identity, None, cfg, entries,
                                                                 views, []))
            t = time.perf_counter()
            index = VideoIndex(path, model=model)
            open_s = time.perf_counter() - t
            q = model.embed_texts(["a dog catching a frisbee"])[0]
            rank_ms = _median_ms(lambda: index.search_embedding(q, topk=10), spec.repeats)
            search_ms = _median_ms(lambda: index.search("a dog catching a frisbee", topk=10), spec.repeats)
            text_ms = _median_ms(lambda: model.embed_texts(["a dog catching a frisbee"]), spec.repeats)
            rows.append({"videos": n, "dim": dim, "file_mb": path.stat().st_size / 2**20, "open_s": open_s,
                         "rank_ms": rank_ms, "search_ms": search_ms, "text_encode_ms": text_ms})
        out["queries"] = rows
    return out


def _read_dim(path) -> int:
    from msta.index.store import read_index

    return read_index(path).views.shape[-1]


def index_table(result: dict) -> str:
    """Markdown of an ``index`` result."""
    s, e = result["spec"], result["embed"]
    lines = [f"Index ({s['model']}, {s['num_frames']} frames at {s['image_size']}, batch {s['batch_size']}, "
             f"{result['device']}, {result['threads']} threads): embedding {e['videos']} videos of "
             f"{s['video_frames']} frames {s['video_hw'][0]}x{s['video_hw'][1]}: **{e['videos_per_s']:.2f} videos/s** "
             f"({e['seconds']:.1f} s; an update with nothing changed {e['noop_update_s'] * 1000:.0f} ms)", "",
             "| indexed videos | file MB | open s | rank only ms | search ms (text + rank) | text encode ms |",
             "|---|---|---|---|---|---|"]
    for r in result["queries"]:
        lines.append(f"| {r['videos']:,} | {r['file_mb']:.1f} | {r['open_s']:.2f} | {r['rank_ms']:.2f} | "
                     f"{r['search_ms']:.2f} | {r['text_encode_ms']:.2f} |")
    return "\n".join(lines)


def index_spec(tiny: bool = False) -> IndexSpec:
    """The suite's index rows: ViT-B/16 (random init) on 16 videos, or msta-tiny on 4 small ones for CI."""
    if tiny:
        return IndexSpec(model="msta-tiny", num_frames=4, image_size=32, videos=4, video_frames=8, video_hw=(48, 64),
                         repeats=3)
    return IndexSpec()
