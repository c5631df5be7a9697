"""The page's actions without the page: classification with the sampled frames, search with thumbnails, messages."""
from __future__ import annotations

import numpy as np
import pytest

from msta.app.backend import FROZEN, Backend
from msta.errors import UsageError, UserError
from msta.index import update_index


@pytest.fixture(scope="module")
def backend(index_world, index_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("app") / "videos.msta-index"
    update_index(index_world["videos"], out, index_model, progress=False)
    return Backend([str(index_world["ckpt"])], str(index_world["cfg"]), [str(out)])


def test_classify_ranks_the_labels_like_the_api(backend, index_world, index_model):
    video = str(sorted(index_world["videos"].rglob("*.mp4"))[0])
    labels = ["a red square", "a green circle", "a blue triangle"]
    result = backend.classify(backend.choices[0], video, "a red square, a green circle,\na blue triangle")
    probs = index_model.video_model.classify([video], labels=labels)[0]
    assert [name for name, _ in result.ranked] == [labels[i] for i in probs.argsort(descending=True).tolist()]
    assert sum(p for _, p in result.ranked) == pytest.approx(1.0, abs=1e-5)
    assert len(result.frames) == 4 and all(f.dtype == np.uint8 and f.shape[-1] == 3 for f in result.frames)
    assert backend.choices == [str(index_world["ckpt"]), FROZEN]
    assert backend.model(FROZEN).identity["adapters"] == "none"


def test_search_gives_thumbnails_in_rank_order(backend):
    hits = backend.search(backend.indexes[0], "a red square", 5)
    assert len(hits) == 5
    assert [c.split()[0] for _, c in hits] == ["#1", "#2", "#3", "#4", "#5"]
    assert all(t.dtype == np.uint8 and min(t.shape[:2]) == 32 for t, _ in hits)   # 32 px videos: native size


def test_user_mistakes_are_messages(backend, tmp_path):
    with pytest.raises(UsageError, match="choose a video"):
        backend.classify(FROZEN, "", "a, b")
    with pytest.raises(UsageError, match="type one or more class names"):
        backend.classify(FROZEN, "x.mp4", " , ")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(UsageError, match="cannot read .*broken.mp4: undecodable"):
        backend.classify(backend.choices[0], str(broken), "a, b")
    with pytest.raises(UsageError, match="type what to look for"):
        backend.search(backend.indexes[0], "  ")
    with pytest.raises(UserError, match="no index file"):
        backend.search(str(tmp_path / "none"), "x")


def test_app_command_help_and_missing_extra(monkeypatch, capsys):
    import sys

    from msta.cli.app import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "127.0.0.1" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "gradio", None)           # as if the [app] extra were not installed
    assert main(["--port", "7999"]) == 2
    assert "pip install 'msta[app]'" in capsys.readouterr().err
    assert main(["--port", "0"]) == 2
    assert "--port 0" in capsys.readouterr().err
