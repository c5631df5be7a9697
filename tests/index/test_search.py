"""Search and classification over an index: ranking against a brute-force oracle, classification equal to the
Python API's, the rebuilt query model checked against the index, the msta.VideoIndex export and the commands."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import msta
from msta.index import IndexModelMismatch, VideoIndex, load_index_model, rank, update_index


@pytest.fixture(scope="module")
def built(index_world, index_model, tmp_path_factory):
    """An index of the (unchanged, shared) videos folder plus its path."""
    out = tmp_path_factory.mktemp("search") / "videos.msta-index"
    update_index(index_world["videos"], out, index_model, batch_size=5, progress=False)
    return out


def test_search_equals_brute_force_oracle(built, index_model, index_world):
    """Video by video, query by query, with nothing reused from the index: the same order and scores."""
    index = VideoIndex(built)            # no model given: rebuilt from the checkpoint and config the index records
    videos = sorted(index_world["videos"].rglob("*.mp4"))
    oracle_emb = torch.stack([F.normalize(index_model.model.encode_video(index_model.read_views(p)).mean(0), dim=-1)
                              for p in videos]).detach()
    for query in ("a red square", "a green circle moving left", "a video"):
        q = index_model.embed_texts([query])[0]
        scores = (oracle_emb @ q).tolist()
        expected = sorted(zip(scores, map(str, videos)), key=lambda sp: -sp[0])[:7]
        hits = index.search(query, topk=7)
        assert [h.path for h in hits] == [p for _, p in expected]
        assert [h.rank for h in hits] == list(range(1, 8))
        assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert len(index.search("anything", topk=100)) == len(index) == 18


def test_rank_is_a_stable_top_k():
    emb = F.normalize(torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 1], [-1, 0]]), dim=-1)
    scores, idx = rank(torch.tensor([1.0, 0]), emb, topk=3)
    assert idx.tolist() == [[0, 2, 3]]                       # the tie (rows 0 and 2) keeps the lower row first
    assert scores[0].tolist() == pytest.approx([1, 1, 2 ** -0.5])
    tied = torch.tensor([[1.0, 0]] * 6)
    for k in (1, 2, 5):                                      # ties across the k-th place: still the lowest rows
        assert rank(torch.tensor([1.0, 0]), tied, topk=k)[1].tolist() == [list(range(k))]
    g = torch.Generator().manual_seed(0)
    many = F.normalize(torch.randn(1000, 16, generator=g), dim=-1)
    qs = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    s, i = rank(qs, many, topk=1000 + 5)
    assert i.shape == (4, 1000)
    assert torch.equal(i, torch.argsort(qs @ many.t(), dim=1, descending=True, stable=True))


def test_classify_equals_the_api(built, index_model, index_world):
    labels = ["a red square", "a green circle", "a blue triangle"]
    index = VideoIndex(built, model=index_model)
    rows = index.classify(labels, topk=3)
    probs = index_model.video_model.classify(index.paths, labels=labels)        # (N, C), 2 views per video
    for row, p in zip(rows, probs):
        assert [name for name, _ in row.top] == [labels[j] for j in p.argsort(descending=True).tolist()]
        assert [q for _, q in row.top] == pytest.approx(sorted(p.tolist(), reverse=True), abs=1e-5)
    assert len(index.classify(labels)[0].top) == 1


def test_other_model_is_refused_for_queries(built, index_world):
    other = load_index_model(str(index_world["ckpt2"]), str(index_world["cfg"]))
    with pytest.raises(IndexModelMismatch, match="was built with another model"):
        VideoIndex(built, model=other)
    with pytest.raises(IndexModelMismatch, match="adapters"):
        VideoIndex(built, ckpt=str(index_world["ckpt2"])).search("x")


def test_videoindex_is_exported_lazily():
    assert msta.VideoIndex is VideoIndex


def test_search_command_table_and_json(built, capsys):
    from msta.cli.search import main

    assert main([str(built), "a red square", "--topk", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "path"] and len(lines) == 4
    assert main([str(built), "a red square", "--topk", "3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == "a red square" and [r["rank"] for r in out["results"]] == [1, 2, 3]
    assert out["results"][0]["path"] == lines[1].split(maxsplit=2)[2]
    assert out["results"][0]["score"] >= out["results"][1]["score"] >= out["results"][2]["score"]


def test_classify_command(built, capsys):
    from msta.cli.classify import main

    assert main([str(built), "--topk", "2", "--format", "json"]) == 0      # the checkpoint's own classes
    out = json.loads(capsys.readouterr().out)
    assert len(out["labels"]) == 6 and len(out["results"]) == 18
    assert all(len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"]
               for r in out["results"])
    assert main([str(built), "--labels", "a red square,a green circle"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 18 and all("%" in line for line in table)


def test_commands_user_errors(built, tmp_path, capsys):
    from msta.cli.classify import main as classify
    from msta.cli.search import main as search

    assert search([str(tmp_path / "none.msta-index"), "x"]) == 2
    assert "no index file at" in capsys.readouterr().err
    assert search([str(built), "  "]) == 2
    assert "the query is empty" in capsys.readouterr().err
    assert classify([str(built), "--labels", " , "]) == 2
    assert "--labels is empty" in capsys.readouterr().err
    assert search([str(built), "x", "--ckpt", str(tmp_path / "gone")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_index_probabilities_equal_the_evaluator(built, index_model, index_world):
    """The classification engine of the protocols (score_dataset, 2 views) on the same videos gives the same
    probabilities as the index (the evaluator sums over views; the index averages)."""
    from msta.data.annotations import read_video_list
    from msta.data.datasets import build_video_dataset
    from msta.eval.evaluator import score_dataset

    cfg, model = index_model.cfg, index_model.model
    items = read_video_list(cfg.data.test_list)
    dataset = build_video_dataset(items, cfg.data, train=False, num_frames=cfg.model.num_frames,
                                  image_size=model.image_size, mean=model.image_mean, std=model.image_std,
                                  views=cfg.eval.views)
    names = ["a red square", "a green circle", "a blue triangle", "a yellow square"]
    class_emb = index_model.embed_classes(names, ["a video of {}."])
    matrix = score_dataset(model, dataset, class_emb, names, batch_size=4)
    index = VideoIndex(built, model=index_model)
    probs = index.probabilities(class_emb, index_model.logit_scale())
    row = {p: i for i, p in enumerate(index.paths)}
    root = index_world["videos"]
    ours = torch.stack([probs[row[str(root / path)]] for path in matrix.paths])
    assert matrix.logits.shape[1] == 2
    torch.testing.assert_close(ours, matrix.scores / 2, atol=1e-5, rtol=1e-4)
