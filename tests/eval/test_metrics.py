"""Metrics against brute-force loop oracles, with ties and random inputs."""
import math

import numpy as np
import pytest
import torch

from msta.eval.metrics import (aggregate_views, confusion_matrix, harmonic_mean, mean_class_accuracy, mean_std,
                               per_class_accuracy, predict, retrieval_recall, topk_accuracy, topk_hits)


def _oracle_hit(row, label, k, ties):
    """Rank the true class by walking the row: count the classes placed ahead of it."""
    ahead = 0
    for j, s in enumerate(row):
        if j == label:
            continue
        if s > row[label] or (ties == "pessimistic" and s == row[label]):
            ahead += 1
    return ahead < k


def _oracle_topk(scores, labels, k, ties="pessimistic"):
    scores, labels = scores.tolist(), labels.tolist()
    return 100.0 * sum(_oracle_hit(r, y, k, ties) for r, y in zip(scores, labels)) / len(labels)


def _tied_scores(n, c, g):
    # Few distinct values -> many ties, including ties with the true class.
    return torch.randint(0, 4, (n, c), generator=g).double()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_topk_matches_oracle_random_and_tied(seed, ties):
    g = torch.Generator().manual_seed(seed)
    n, c = 40, 7
    labels = torch.randint(0, c, (n,), generator=g)
    for scores in (torch.randn(n, c, generator=g), _tied_scores(n, c, g)):
        got = topk_accuracy(scores, labels, ks=(1, 2, 5, 7, 10), ties=ties)
        for k in (1, 2, 5, 7, 10):
            assert got[f"top{k}"] == pytest.approx(_oracle_topk(scores, labels, k, ties))
        assert got["top7"] == 100.0 and got["top10"] == 100.0          # k >= C: always a hit


def test_tie_policy_on_hand_made_example():
    scores = torch.tensor([[1.0, 1.0, 0.0],     # true 0 tied with 1
                           [0.5, 0.5, 0.5],     # constant row
                           [0.0, 2.0, 1.0]])    # clean hit
    labels = torch.tensor([0, 2, 1])
    assert topk_accuracy(scores, labels, ks=(1, 2))["top1"] == pytest.approx(100 / 3)
    assert topk_accuracy(scores, labels, ks=(1, 2))["top2"] == pytest.approx(200 / 3)
    assert topk_accuracy(scores, labels, ks=(1,), ties="optimistic")["top1"] == 100.0
    assert topk_hits(scores, labels, 3).all()


def test_topk_accepts_numpy_and_lists_and_rejects_bad_input():
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert topk_accuracy(scores, [1, 0], ks=(1,)) == {"top1": 100.0}
    with pytest.raises(ValueError):
        topk_accuracy(scores, [1, 2])                       # label out of range
    with pytest.raises(ValueError):
        topk_accuracy(np.array([[np.nan, 0.0]]), [0])       # NaN scores
    with pytest.raises(ValueError):
        topk_accuracy(scores, [1.0, 0.0])                   # float labels
    with pytest.raises(ValueError):
        topk_hits(scores, [1, 0], 0)
    with pytest.raises(ValueError):
        topk_accuracy(scores, [1, 0], ties="random")


@pytest.mark.parametrize("seed", range(3))
def test_per_class_and_mean_class_accuracy_match_oracle(seed):
    g = torch.Generator().manual_seed(100 + seed)
    n, c = 50, 6
    labels = torch.randint(0, c - 1, (n,), generator=g)     # class c-1 never appears
    scores = _tied_scores(n, c, g) if seed % 2 else torch.randn(n, c, generator=g)
    acc = per_class_accuracy(scores, labels)
    for cls in range(c):
        rows = [i for i in range(n) if labels[i] == cls]
        if not rows:
            assert math.isnan(acc[cls])
            continue
        expected = 100.0 * sum(_oracle_hit(scores[i].tolist(), cls, 1, "pessimistic") for i in rows) / len(rows)
        assert acc[cls] == pytest.approx(expected)
    present = [a for a in acc if not math.isnan(a)]
    assert mean_class_accuracy(scores, labels) == pytest.approx(sum(present) / len(present))
    # weighting the per-class accuracies by class size gives back top-1
    counts = np.bincount(labels.numpy(), minlength=c)
    weighted = np.nansum(acc * counts) / n
    assert weighted == pytest.approx(topk_accuracy(scores, labels, ks=(1,))["top1"])


def test_predict_breaks_ties_by_lowest_index():
    scores = torch.tensor([[0.0, 3.0, 3.0], [2.0, 2.0, 2.0], [1.0, 0.0, 5.0]])
    assert predict(scores).tolist() == [1, 0, 2]


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_matches_oracle(seed):
    g = torch.Generator().manual_seed(200 + seed)
    n, c = 60, 5
    labels = torch.randint(0, c, (n,), generator=g)
    scores = _tied_scores(n, c, g) if seed else torch.randn(n, c, generator=g)
    cm = confusion_matrix(scores, labels)
    expected = np.zeros((c, c), dtype=np.int64)
    for row, y in zip(scores.tolist(), labels.tolist()):
        best = max(range(c), key=lambda j: (row[j], -j))        # highest score, then lowest index
        expected[y, best] += 1
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == n and cm.shape == (c, c)


def test_mean_std_and_harmonic_mean():
    mean, std = mean_std([70.0, 72.0, 74.0])
    assert mean == pytest.approx(72.0)
    assert std == pytest.approx(math.sqrt(8 / 3))
    assert mean_std([70.0, 72.0, 74.0], ddof=1)[1] == pytest.approx(2.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(50.0, 50.0) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        harmonic_mean(-1.0, 3.0)


def test_aggregate_views_matches_loop():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 3, 6, generator=g) * 10
    got = aggregate_views(logits)
    assert got.shape == (4, 6)
    for i in range(4):
        expected = sum(torch.softmax(logits[i, v], 0) for v in range(3))
        torch.testing.assert_close(got[i], expected)
    torch.testing.assert_close(got.sum(1), torch.full((4,), 3.0))
    # a view-summed score is a valid input to the accuracy functions
    assert 0.0 <= topk_accuracy(got, torch.tensor([0, 1, 2, 3]))["top1"] <= 100.0
    assert aggregate_views(torch.zeros(2, 1, 4, dtype=torch.float16)).dtype == torch.float32
    with pytest.raises(ValueError):
        aggregate_views(torch.zeros(4, 6))


# ------------------------------------------------------------------------------------------------------------------
# retrieval


def _oracle_recall(sim, match, k, ties):
    """Sort each gallery row (ties: non-matches first when pessimistic, last when optimistic), find the first match."""
    hits = 0
    for row, pos in zip(sim.tolist(), match.tolist()):
        order = sorted(range(len(row)), key=lambda g: (-row[g], pos[g] if ties == "pessimistic" else not pos[g]))
        first = next(i for i, g in enumerate(order) if pos[g])
        hits += first < k
    return 100.0 * hits / len(sim)


def _captions_per_video(g, videos, max_captions):
    """(Q,) video of each caption: every video gets 1..max_captions captions, in shuffled order."""
    counts = torch.randint(1, max_captions + 1, (videos,), generator=g)
    owner = torch.repeat_interleave(torch.arange(videos), counts)
    return owner[torch.randperm(len(owner), generator=g)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_retrieval_recall_matches_oracle_with_several_captions_per_video(seed, ties):
    g = torch.Generator().manual_seed(seed)
    owner = _captions_per_video(g, videos=12, max_captions=4)
    match = owner[:, None] == torch.arange(12)[None, :]            # (Q captions, 12 videos)
    for sim in (torch.randn(len(owner), 12, generator=g), torch.randint(0, 3, (len(owner), 12), generator=g)):
        for s, m in ((sim, match), (sim.t(), match.t())):          # text -> video, video -> text
            got = retrieval_recall(s, m, ks=(1, 2, 5, 10, 100), ties=ties)
            want = {f"r{k}": _oracle_recall(s, m, k, ties) for k in (1, 2, 5, 10, 100)}
            assert got == pytest.approx(want, abs=1e-9)
            assert got["r100"] == 100.0


def test_retrieval_recall_simple_cases_and_ties():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.5, 0.5, 0.5]])
    eye = torch.eye(3, dtype=torch.bool)
    # row 0: a hit; row 1: one non-match ahead (a hit from K = 2); row 2: all ties, two non-matches ahead
    assert retrieval_recall(sim, eye, ks=(1, 2, 3)) == pytest.approx({"r1": 100 / 3, "r2": 200 / 3, "r3": 100.0})
    # ... unless ties are optimistic
    assert retrieval_recall(sim, eye, ks=(1,), ties="optimistic") == pytest.approx({"r1": 200 / 3})
    # a second positive for row 1 that scores higher makes it a hit; other positives never count against a query
    two = torch.tensor([[True, False, True], [False, True, True], [False, False, True]])
    assert retrieval_recall(sim, two, ks=(1,))["r1"] == pytest.approx(200 / 3)
    # permuting the gallery (columns of both) changes nothing
    perm = torch.tensor([2, 0, 1])
    assert retrieval_recall(sim[:, perm], two[:, perm], ks=(1,)) == retrieval_recall(sim, two, ks=(1,))


def test_retrieval_recall_errors():
    sim = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"queries \[1\] have no match"):
        retrieval_recall(sim, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="bool"):
        retrieval_recall(sim, torch.ones(2, 3))
    with pytest.raises(ValueError, match="same shape"):
        retrieval_recall(sim, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(torch.full((2, 3), math.nan), torch.ones(2, 3, dtype=torch.bool))
