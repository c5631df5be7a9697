"""Selection-split evaluation: retrieval plumbing (shards, padding, views, bad videos) against a direct computation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from msta.engine import evaluation
from msta.engine.evaluation import evaluate_retrieval, retrieval_selection
from msta.engine.loaders import EvalSampler, eval_loader
from msta.eval.metrics import retrieval_recall
from msta.models.video_clip import VideoTextOutput

E = 6


class FakeCLIP(nn.Module):
    """Video embedding = the normalised (flattened) clip; caption embedding = a row of a fixed table per caption id."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, video=None, texts=None):
        video_emb = F.normalize(video.flatten(1), dim=-1) if video is not None else None
        class_emb = F.normalize(self.table[texts[:, 0]], dim=-1) if texts is not None else None
        return VideoTextOutput(video_emb, class_emb, torch.tensor(100.0))


class CaptionedVectors(Dataset):
    """Video i is a random vector shaped as a (views, T=1, C=E, 1, 1) clip; caption ids count up over the videos."""

    def __init__(self, g, counts, views=1, replaced=()):
        self.vectors = torch.randn(len(counts), E, generator=g)
        ids = iter(range(sum(counts)))
        self.captions = [tuple(str(next(ids)) for _ in range(c)) for c in counts]
        self.views, self.replaced = views, set(replaced)

    def __len__(self):
        return len(self.vectors)

    def __getitem__(self, i):
        shown = 0 if i in self.replaced else i            # a bad video: the dataset hands back another one
        clip = self.vectors[shown].view(1, E, 1, 1)
        return {"video": clip.expand(self.views, 1, E, 1, 1) if self.views > 1 else clip, "index": shown}


def tokenize(texts):
    return torch.tensor([[int(t)] for t in texts])


def _direct(ds, table, keep_videos):
    """Recall computed straight from the definitions, over the kept videos and their captions."""
    owner = [v for v, caps in enumerate(ds.captions) for _ in caps if v in keep_videos]
    caps = [int(c) for v, caps in enumerate(ds.captions) for c in caps if v in keep_videos]
    sim = F.normalize(table[caps], dim=-1) @ F.normalize(ds.vectors[keep_videos], dim=-1).t()
    match = torch.tensor(owner)[:, None] == torch.tensor(keep_videos)[None, :]
    t2v, v2t = retrieval_recall(sim, match), retrieval_recall(sim.t(), match.t())
    return {**{f"t2v_{k}": v for k, v in t2v.items()}, **{f"v2t_{k}": v for k, v in v2t.items()},
            "mean_r1": (t2v["r1"] + v2t["r1"]) / 2}


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("replaced", [(), (3,)])
def test_retrieval_matches_direct_computation(views, replaced):
    g = torch.Generator().manual_seed(views + len(replaced))
    ds = CaptionedVectors(g, counts=[2, 1, 3, 2, 1, 2, 1], views=views, replaced=replaced)
    table = torch.randn(sum(len(c) for c in ds.captions), E, generator=g)
    engine = FakeCLIP(table).train()
    loader = eval_loader(ds, batch_size=3, num_workers=0, rank=0, world_size=1)
    got = evaluate_retrieval(engine, loader, tokenize, device=torch.device("cpu"), dtype=torch.float32,
                             text_batch=4)
    keep = [v for v in range(len(ds)) if v not in replaced]
    want = {**_direct(ds, table, keep), "num_videos": len(keep), "num_captions": sum(len(ds.captions[v]) for v in keep)}
    assert {k: got[k] for k in want} == pytest.approx(want)
    assert {"t2v_medr", "t2v_meanr", "v2t_medr", "v2t_meanr", "rsum"} <= set(got)   # msta.eval.retrieval's ranks too
    assert engine.training  # the mode is restored
    selection = retrieval_selection(tokenize)
    assert selection.metric == "mean_r1" and "mean_r1" in selection.describe(got)


def test_strided_shards_gather_back_into_position_order(monkeypatch):
    """Rank r holds positions r, r + W, ... (EvalSampler); the gather must undo the striding and drop the padding."""
    total, world = 7, 3
    shards = []
    for rank in range(world):
        positions = EvalSampler(total, rank=rank, world_size=world).positions()
        shards.append(torch.tensor([[float(p)] for p in positions]))   # padding rows hold positions >= total
    monkeypatch.setattr(evaluation, "all_gather_tensor", lambda t: torch.cat(shards))
    gathered = evaluation._gather_strided(shards[0], world, total)
    assert gathered.flatten().tolist() == list(range(total))
