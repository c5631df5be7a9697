"""The index benchmark rows (scripts/benchmark.py index): they run end to end and report what they claim."""
from __future__ import annotations

import pytest

from msta.bench.index_bench import IndexSpec, index_table, run_index_bench


@pytest.mark.slow
def test_index_bench_rows():
    spec = IndexSpec(model="msta-tiny", num_frames=4, image_size=32, videos=3, video_frames=6, video_hw=(32, 48),
                     batch_size=2, sizes=(50, 3000), repeats=2)
    result = run_index_bench(spec, threads=2)
    embed = result["embed"]
    assert embed["videos"] == 3 and embed["videos_per_s"] > 0 and embed["noop_update_s"] < embed["seconds"] * 10
    assert [r["videos"] for r in result["queries"]] == [50, 3000]
    for row in result["queries"]:
        assert 0 < row["rank_ms"] and 0 < row["text_encode_ms"] and row["dim"] == 32
    table = index_table(result)
    assert "videos/s" in table and "| 3,000 |" in table
