"""The retrieval benchmark rows (msta.bench.retrieval_bench) at tiny size, and their place in the suite's report."""
from msta.bench.report import format_report
from msta.bench.retrieval_bench import retrieval_spec, retrieval_table, run_retrieval_bench


def test_tiny_retrieval_rows_measure_embedding_and_ranking():
    result = run_retrieval_bench(retrieval_spec(tiny=True), threads=1)
    e = result["embed"]
    assert e["videos"] == 4 and e["videos_per_s"] > 0 and e["captions"] == 32 and e["captions_per_s"] > 0
    assert [r["n"] for r in result["ranking"]] == [200, 1000]
    assert all(r["similarity_s"] > 0 and r["rank_s"] > 0 and r["rank_dual_softmax_s"] > 0 for r in result["ranking"])
    assert all(r["t2v_r1"] > 50 for r in result["ranking"])         # the synthetic matrix is a plausible one
    table = retrieval_table(result)
    assert "videos/s" in table and "| 1,000 x 1,000 |" in table
    report = format_report({"machine": {}, "settings": {}, "retrieval": result})
    assert "### text <-> video retrieval evaluation" in report
