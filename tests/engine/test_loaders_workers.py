"""DataLoader workers over decord: never forked from the training process, same data as without workers.

The hang this guards against (issue 14 item 6) came from forking workers after decord had decoded in the parent.
Every round here decodes in the parent first, then starts two workers and reads a whole epoch, many times over; a
hang fails the test through its timeout instead of blocking the suite.
"""
import logging
import os

import pytest
import torch

from msta.data.annotations import VideoItem
from msta.data.datasets import VideoDataset
from msta.data.mp4 import write_mp4
from msta.data.transforms import TrainTransform
from msta.engine.loaders import EvalSampler, TrainSampler, eval_loader, train_loader, worker_kwargs

ROUNDS = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    g = torch.Generator().manual_seed(0)
    names = []
    for k in range(8):
        frames = (torch.rand(12, 32, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
        write_mp4(root / f"v{k}.mp4", frames, fps=8)
        names.append(f"v{k}.mp4")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    items = [VideoItem(n, k % 4) for k, n in enumerate(names + ["broken.mp4"])]
    return VideoDataset(items, root, num_frames=4, transform=TrainTransform(32), train=True, seed=3,
                        max_bad_fraction=0.5)


def _epoch(loader):
    return [(b["index"].tolist(), b["video"]) for b in loader]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_never_fork_the_parent_and_match_no_workers_round_after_round(dataset):
    dataset[0]  # decord decodes in the parent first: the case that could deadlock forked workers
    sampler = TrainSampler(len(dataset), global_batch=2, rank=0, world_size=1, seed=1)
    sampler.set_epoch(0)
    dataset.set_epoch(0)
    reference = _epoch(train_loader(dataset, sampler, 2, num_workers=0))
    for round_ in range(ROUNDS):
        loader = train_loader(dataset, sampler, 2, num_workers=2)
        assert loader.multiprocessing_context.get_start_method() in ("forkserver", "spawn")
        assert loader.persistent_workers
        for epoch in range(2):  # persistent workers see the new epoch (the dataset shares it)
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            got = _epoch(loader)
            if epoch == 0:
                assert [i for i, _ in got] == [i for i, _ in reference], round_
                assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, reference)), round_
            else:
                assert not all(torch.equal(a, b) for (_, a), (_, b) in zip(got, reference))
        dataset[round_ % 8]  # and the parent decodes again between loaders
        del loader
    assert dataset.bad_count == 1  # the broken video, found by a worker, is known here


@pytest.mark.timeout(120)
def test_worker_warnings_reach_the_run_log(dataset, tmp_path):
    log = tmp_path / "train.log"
    root = logging.getLogger("msta")
    handler = logging.FileHandler(log)
    root.addHandler(handler)
    try:
        fresh = VideoDataset(dataset.items, dataset.root, num_frames=4, transform=TrainTransform(32), train=True,
                             seed=3, max_bad_fraction=0.5)
        loader = eval_loader(fresh, 3, 1, rank=0, world_size=1)
        assert _epoch(loader) and fresh.bad_count == 1
        del loader
    finally:
        root.removeHandler(handler)
        handler.close()
    text = log.read_text()
    assert "bad video skipped: broken.mp4" in text and "[worker 0]" in text


def test_no_workers_no_context():
    assert worker_kwargs(0) == {}
    kw = worker_kwargs(2)
    assert kw["persistent_workers"] and kw["multiprocessing_context"].get_start_method() != "fork"
    assert os.name != "posix" or kw["multiprocessing_context"].get_start_method() == "forkserver"
    assert len(EvalSampler(5, rank=0, world_size=2)) == 3
