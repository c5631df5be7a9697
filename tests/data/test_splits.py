import random
from collections import Counter

import pytest

from msta.data.annotations import VideoItem
from msta.data.splits import (base_to_novel, few_shot, hold_out, k600_novel_classes, k600_zero_shot_draws,
                              rank_classes_by_frequency, subset_classes)


def fake_list(num_classes=51, seed=0):
    rng = random.Random(seed)
    counts = {c: rng.randint(20, 40) for c in range(num_classes)}
    return [VideoItem(f"c{c}/v{k}.avi", c) for c, n in counts.items() for k in range(n)], counts


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_few_shot_counts_and_determinism(k):
    items, _ = fake_list()
    shots = few_shot(items, k, seed=1024)
    assert len(shots) == 51 * k and set(Counter(it.label for it in shots).values()) == {k}
    assert set(shots) <= set(items)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    assert few_shot(shuffled, k, seed=1024) == shots  # input order does not matter
    assert few_shot(items, k, seed=1) != shots


def test_few_shot_too_few_videos():
    items = [VideoItem("a.avi", 0), VideoItem("b.avi", 1), VideoItem("c.avi", 1)]
    with pytest.raises(ValueError, match="class 0 has 1 videos"):
        few_shot(items, 2, 0)
    assert len(few_shot(items, 2, 0, strict=False)) == 3


def test_base_to_novel_halves_by_frequency():
    train, counts = fake_list(51)
    test = [VideoItem(f"t{c}/{k}.avi", c) for c in range(51) for k in range(3)]
    names = [f"class{c}" for c in range(51)]
    splits = [base_to_novel(train, test, names, seed=s) for s in (1, 2, 3)]
    b = splits[0]
    assert len(b.base_classes) == 26 and len(b.novel_classes) == 25
    assert min(counts[c] for c in b.base_ids) >= max(counts[c] for c in b.novel_ids)  # base = more frequent half
    assert [counts[c] for c in b.base_ids] == sorted((counts[c] for c in b.base_ids), reverse=True)
    assert len(b.train) == 26 * 16 and {it.label for it in b.train} == set(range(26))
    assert len(b.base_test) == 26 * 3 and {it.label for it in b.novel_test} == set(range(25))
    for it in b.novel_test:  # re-indexed from 0 consistently with the novel table
        assert it.path.startswith(f"t{b.novel_ids[it.label]}/")
    assert all(s.base_ids == b.base_ids for s in splits) and splits[1].train != b.train
    assert base_to_novel(train, test, names, seed=1) == b


def test_rank_ties_by_id():
    items = [VideoItem("a", 1), VideoItem("b", 0), VideoItem("c", 2), VideoItem("d", 2)]
    assert rank_classes_by_frequency(items, 4) == [2, 0, 1, 3]


def test_k600_zero_shot():
    k400 = [f"action {i}" for i in range(400)] + ["dying hair"]
    k600 = [f"Action_{i}" for i in range(400)] + ["dyeing hair"] + [f"new {i}" for i in range(220)]
    assert len(k600_novel_classes(k600, k400)) == 221  # the rename counts as new without an alias
    novel = k600_novel_classes(k600, k400, aliases={"dyeing hair": "dying hair"})
    assert novel == [f"new {i}" for i in range(220)]
    draws = k600_zero_shot_draws(novel, seed=0)
    assert len(draws) == 3 and all(len(d) == 160 and len(set(d)) == 160 for d in draws)
    assert draws == k600_zero_shot_draws(novel, seed=0) and draws[0] != draws[1]
    items = [VideoItem(f"v{i}.mp4", i) for i in range(len(k600))]
    sub, table = subset_classes(items, k600, draws[0])
    assert len(sub) == 160 and sorted(it.label for it in sub) == list(range(160))
    assert all(k600[int(it.path[1:-4])] == table[it.label] for it in sub)


def test_hold_out():
    items, _ = fake_list(10)
    kept, held = hold_out(items, 0.1, seed=3)
    assert len(held) == round(0.1 * len(items)) and not set(kept) & set(held)
    assert len(kept) + len(held) == len(items)
    assert hold_out(items[::-1], 0.1, seed=3) == (kept, held)
    assert hold_out(items, 0.1, seed=4)[1] != held
    assert hold_out(items[:3], 0.01, seed=0)[1] != []
    assert hold_out(items, 0.0, seed=0) == (sorted(items, key=lambda i: i.path), [])
