"""msta.eval.retrieval: ranks, R@K / MdR / MnR and dual softmax against brute-force oracles, ties included."""
import math
import statistics

import pytest
import torch

from msta.eval import retrieval as R
from msta.eval.metrics import retrieval_recall


def _oracle_rank(scores: list[float], correct: set[int]) -> int:
    """Position of the first correct item after a sort by score, wrong items first among equal scores."""
    order = sorted(range(len(scores)), key=lambda g: (-scores[g], g in correct))
    return next(i for i, g in enumerate(order) if g in correct)


def _oracle(sim: torch.Tensor, owner: list[int], ks=(1, 5, 10)) -> dict[str, float]:
    q, n = sim.shape
    rows = sim.tolist()
    t2v = [_oracle_rank(rows[i], {owner[i]}) for i in range(q)]
    v2t = [_oracle_rank([rows[i][v] for i in range(q)], {i for i in range(q) if owner[i] == v}) for v in range(n)]
    out = {}
    for name, ranks in (("t2v", t2v), ("v2t", v2t)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
        out[f"{name}_medr"] = statistics.median(ranks) + 1
        out[f"{name}_meanr"] = sum(ranks) / len(ranks) + 1
    return out


def _tied_case(seed: int, videos: int = 12, per_video: int = 3):
    g = torch.Generator().manual_seed(seed)
    owner = [v for v in range(videos) for _ in range(per_video)]
    # small integers: many exact ties, between correct and wrong items and among the correct ones
    sim = torch.randint(0, 4, (len(owner), videos), generator=g).float()
    return sim, owner


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_brute_force_with_ties_and_several_captions(seed):
    sim, owner = _tied_case(seed)
    got = R.retrieval_metrics(sim, owner)
    want = _oracle(sim, owner)
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert got["mean_r1"] == pytest.approx((want["t2v_r1"] + want["v2t_r1"]) / 2)
    assert got["rsum"] == pytest.approx(sum(v for k, v in want.items() if "_r" in k and k[-1].isdigit()))


def test_recalls_agree_with_the_toolkit_retrieval_recall():
    sim, owner = _tied_case(7)
    match = torch.tensor(owner)[:, None] == torch.arange(sim.shape[1])[None]
    got = R.retrieval_metrics(sim, owner)
    for name, (s, m) in {"t2v": (sim, match), "v2t": (sim.t(), match.t())}.items():
        for k, v in retrieval_recall(s, m).items():
            assert got[f"{name}_{k}"] == pytest.approx(v)


def test_constant_scores_rank_every_query_last():
    sim = torch.zeros(5, 5)
    ranks = R.query_ranks(sim, torch.eye(5, dtype=torch.bool))
    assert ranks.tolist() == [4] * 5
    m = R.retrieval_metrics(sim, list(range(5)))
    assert m["t2v_r1"] == 0 and m["v2t_r1"] == 0 and m["t2v_medr"] == 5 and m["t2v_meanr"] == 5


def test_perfect_diagonal_and_one_tie_with_the_correct_item():
    sim = torch.eye(4) + 0.1
    m = R.retrieval_metrics(sim, [0, 1, 2, 3])
    assert m["t2v_r1"] == 100 and m["v2t_r1"] == 100 and m["t2v_medr"] == 1 and m["v2t_meanr"] == 1
    sim[0, 3] = sim[0, 0]                        # caption 0 now ties its video with video 3: counted against it
    assert R.query_ranks(sim, torch.eye(4, dtype=torch.bool)).tolist() == [1, 0, 0, 0]


def test_median_of_an_even_count_is_the_mean_of_the_middle_ranks():
    assert R.rank_metrics(torch.tensor([0, 1, 2, 5]))["medr"] == 2.5
    assert all(math.isnan(v) for v in R.rank_metrics(torch.tensor([], dtype=torch.long)).values())


def test_jointly_permuting_captions_and_videos_changes_nothing():
    sim, owner = _tied_case(3)
    g = torch.Generator().manual_seed(0)
    pq, pv = torch.randperm(sim.shape[0], generator=g), torch.randperm(sim.shape[1], generator=g)
    inverse = torch.argsort(pv)
    owner_p = [int(inverse[owner[i]]) for i in pq.tolist()]
    assert R.retrieval_metrics(sim[pq][:, pv], owner_p) == R.retrieval_metrics(sim, owner)


def test_chunked_ranks_equal_one_chunk(monkeypatch):
    sim, owner = _tied_case(1, videos=20, per_video=2)
    whole = R.retrieval_metrics(sim, owner)
    monkeypatch.setattr(R, "RANK_CHUNK", 3)
    assert R.retrieval_metrics(sim, owner) == whole


def test_recall_is_monotone_in_k_and_full_at_the_gallery_size():
    sim, owner = _tied_case(2, videos=10, per_video=1)
    m = R.retrieval_metrics(sim, owner, ks=(1, 2, 5, 10))
    assert m["t2v_r1"] <= m["t2v_r2"] <= m["t2v_r5"] <= m["t2v_r10"] == 100
    assert m["v2t_r10"] == 100


def test_dual_softmax_matches_a_loop_and_is_a_separate_scoring():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(6, 4, generator=g, dtype=torch.float64)
    got = R.dual_softmax(sim, scale=10.0)
    for q in range(6):
        for v in range(4):
            prior = math.exp(10 * sim[q, v]) / sum(math.exp(10 * sim[i, v]) for i in range(6))
            assert got[q, v].item() == pytest.approx(sim[q, v].item() * prior)
    owner = [0, 0, 1, 2, 3, 3]
    rescored = R.retrieval_metrics(sim, owner, dual_softmax_scale=10.0)
    t2v_ranks = R.query_ranks(R.dual_softmax(sim, 10.0), torch.tensor(owner)[:, None] == torch.arange(4)[None])
    assert rescored["t2v_r1"] == pytest.approx(100 * (t2v_ranks < 1).double().mean().item())
    match = torch.tensor(owner)[:, None] == torch.arange(4)[None]
    v2t_ranks = R.query_ranks(R.dual_softmax(sim.t(), 10.0), match.t())           # the transposed matrix, ranked
    assert rescored["v2t_meanr"] == pytest.approx(v2t_ranks.double().mean().item() + 1)
    torch.testing.assert_close(R.dual_softmax(sim, 10.0, query_dim=1), R.dual_softmax(sim.t(), 10.0).t())


def test_dual_softmax_demotes_a_hub_video():
    # video 1 scores 0.9 for every caption: plain ranking puts it first for captions 0 and 2; the prior fixes that
    sim = torch.tensor([[0.8, 0.9, 0.1], [0.1, 0.9, 0.2], [0.1, 0.9, 0.8]])
    plain = R.retrieval_metrics(sim, [0, 1, 2])
    dsl = R.retrieval_metrics(sim, [0, 1, 2], dual_softmax_scale=100.0)
    assert plain["t2v_r1"] == pytest.approx(100 / 3) and dsl["t2v_r1"] == 100


def test_user_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"videos \[2\] have no caption"):
        R.retrieval_metrics(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        R.retrieval_metrics(torch.tensor([[math.nan]]), [0])
    with pytest.raises(ValueError, match="index the 2 video columns"):
        R.retrieval_metrics(torch.zeros(2, 2), [0, 2])
    with pytest.raises(ValueError, match="no correct item"):
        R.query_ranks(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
