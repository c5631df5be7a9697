"""Samplers against independent oracles (exact rational arithmetic / numpy) and their properties."""
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from msta.data.sampling import dense_indices, sample_indices, sample_views, segment_indices

CASES = [(L, n) for L in (1, 2, 5, 7, 8, 9, 16, 31, 64, 100, 301, 500) for n in (1, 2, 3, 8, 16, 32, 64)]


def oracle_segment_test(L, n, clip=0, num_clips=1):
    # frame at fraction (clip + 1/2) / num_clips of segment k, computed exactly
    return [min(L - 1, int((Fraction(k) + Fraction(2 * clip + 1, 2 * num_clips)) * Fraction(L, n))) for k in range(n)]


def oracle_dense(L, n, stride, start):
    return np.minimum(np.arange(n) * stride + start, L - 1).tolist()


@pytest.mark.parametrize("L,n", CASES)
def test_segment_test_is_the_segment_centre(L, n):
    assert segment_indices(L, n, train=False) == oracle_segment_test(L, n)
    for c in range(3):
        assert segment_indices(L, n, train=False, clip=c, num_clips=3) == oracle_segment_test(L, n, c, 3)


@pytest.mark.parametrize("L,n", CASES)
def test_segment_train_properties(L, n):
    for seed in range(5):
        idx = segment_indices(L, n, train=True, generator=torch.Generator().manual_seed(seed))
        assert len(idx) == n and idx == sorted(idx) and all(0 <= i < L for i in idx)
        for k, i in enumerate(idx):  # frame k lies among segment k's frames [floor(k L / n), floor((k+1) L / n))
            lo, hi = int(np.floor(k * L / n)), int(np.floor((k + 1) * L / n))
            assert i == min(lo, L - 1) if hi == lo else lo <= i < hi
        again = segment_indices(L, n, train=True, generator=torch.Generator().manual_seed(seed))
        assert again == idx
        if L >= n:
            assert len(set(idx)) == n  # videos at least as long as the clip never repeat a frame


def test_segment_train_varies_with_the_seed():
    draws = {tuple(segment_indices(100, 8, train=True, generator=torch.Generator().manual_seed(s))) for s in range(10)}
    assert len(draws) > 5


@pytest.mark.parametrize("L,n", CASES)
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_dense(L, n, stride):
    span = (n - 1) * stride + 1
    room = max(0, L - span)
    assert dense_indices(L, n, stride, train=False) == oracle_dense(L, n, stride, room // 2)
    views = sample_views(L, n, 3, sampling="dense", stride=stride)
    assert views[0] == oracle_dense(L, n, stride, 0) and views[-1] == oracle_dense(L, n, stride, room)
    for seed in range(3):
        idx = dense_indices(L, n, stride, train=True, generator=torch.Generator().manual_seed(seed))
        assert len(idx) == n and idx == sorted(idx) and all(0 <= i < L for i in idx)
        assert any(idx == oracle_dense(L, n, stride, s) for s in range(room + 1))


def test_dispatch_and_errors():
    assert sample_indices(10, 2, sampling="segment", train=False) == [2, 7]
    with pytest.raises(ValueError, match="data.sampling"):
        sample_indices(10, 2, sampling="uniform", train=False)
    with pytest.raises(ValueError, match="at least 1"):
        segment_indices(0, 8, train=False)
    with pytest.raises(ValueError, match="stride"):
        dense_indices(10, 2, 0, train=False)


def test_random_property_sweep():
    rng = random.Random(0)
    for _ in range(300):
        L, n, stride = rng.randint(1, 500), rng.randint(1, 64), rng.randint(1, 4)
        for sampling in ("segment", "dense"):
            g = torch.Generator().manual_seed(rng.randint(0, 10**6))
            idx = sample_indices(L, n, sampling=sampling, train=True, stride=stride, generator=g)
            assert len(idx) == n and idx == sorted(idx) and 0 <= idx[0] and idx[-1] < L
