"""K600 zero-shot files (ER-ZSAR protocol) from a fake K600 layout with the real class names: exactly 220 novel
classes once the K400 -> K600 renames are mapped, 3 seeded draws of 160 re-indexed from 0, lists over the pool."""
from pathlib import Path

import pytest
import yaml

from msta.config import load_config
from msta.data.annotations import read_class_table, read_video_list, write_class_table
from msta.data.splits import K600_RENAMED_FROM_K400, k600_novel_classes

REPO = Path(__file__).resolve().parents[2]


def _names(dataset: str) -> list[str]:
    return list(yaml.safe_load((REPO / "prompts" / f"{dataset}.yaml").read_text())["classes"])


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """K600 annotation CSVs (1 train, 2 val videos per class; one novel class without val videos) + a K400 table."""
    root = tmp_path_factory.mktemp("k600")
    k600 = _names("k600")
    header = "label,youtube_id,time_start,time_end,split\n"
    rows = {"train": [], "validate": []}
    for i, c in enumerate(k600):
        for split, n in (("train", 1), ("validate", 0 if c == "spelunking" else 2)):
            for k in range(n):
                yid = f"{split[0]}{i:04d}_{k}"
                rows[split].append(f'"{c}",{yid},0,10,{split}\n')
                folder = root / ("train" if split == "train" else "val") / c
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{yid}_000000_000010.mp4").write_bytes(b"x")
    (root / "annotations").mkdir()
    for split, lines in rows.items():
        (root / "annotations" / f"{split}.csv").write_text(header + "".join(lines))
    k400 = write_class_table(root / "k400_classes.csv", _names("k400"))
    return root, k400


def test_renames_give_exactly_220_novel_classes():
    k600, k400 = _names("k600"), _names("k400")
    assert len(k600_novel_classes(k600, k400)) == 231                  # every rename counted as new
    novel = k600_novel_classes(k600, k400, aliases=K600_RENAMED_FROM_K400)
    assert len(novel) == 220 and not set(K600_RENAMED_FROM_K400) & set(novel)
    assert set(K600_RENAMED_FROM_K400) <= set(k600) and set(K600_RENAMED_FROM_K400.values()) <= set(k400)


@pytest.mark.parametrize("pool, per_class", [("val", 2), ("all", 3)])
def test_prepare_script_writes_k600_zero_shot_files(layout, tmp_path, capsys, pool, per_class):
    from scripts.prepare_data import main

    root, k400 = layout
    out = tmp_path / "lists"
    assert main(["k600", "--root", str(root), "--out", str(out), "--k400-classes", str(k400),
                 "--zs-pool", pool]) == 0
    printed = capsys.readouterr().out
    assert f"pool: {pool}: all K600 " in printed and "220 novel classes" in printed

    novel = read_class_table(out / "zs_novel_classes.csv")
    assert novel == k600_novel_classes(read_class_table(out / "classes.csv"), read_class_table(k400),
                                       aliases=K600_RENAMED_FROM_K400)
    assert len(novel) == 220 and "dyeing hair" not in novel and "hugging baby" in novel
    tables = [read_class_table(out / f"zs_draw{n}_classes.csv") for n in (1, 2, 3)]
    assert all(len(t) == 160 == len(set(t)) and set(t) <= set(novel) for t in tables)
    assert tables[0] != tables[1] != tables[2]
    for n, table in enumerate(tables, 1):
        items = read_video_list(out / f"zs_draw{n}.txt")
        assert {it.label for it in items} <= set(range(160))
        for it in items:   # labels index the draw's own table: the folder is the class
            assert Path(it.path).parent.name == table[it.label]
            assert pool == "all" or it.path.startswith("val/")
        expected = sum(per_class - 2 * (c == "spelunking") for c in table)   # spelunking has no val videos
        assert len(items) == expected
    report = (out / "zs_report.txt").read_text()
    assert "seed 0" in report and "dyeing hair -> dying hair" in report
    assert ("empty\tspelunking" in report) == (pool == "val")

    # the same draws again (seeded), and the files are the ones configs/zeroshot_k600.yaml names
    again = tmp_path / "again"
    assert main(["k600", "--root", str(root), "--out", str(again), "--k400-classes", str(k400),
                 "--zs-pool", pool]) == 0
    assert (again / "zs_draw2_classes.csv").read_text() == (out / "zs_draw2_classes.csv").read_text()
    cfg = load_config(REPO / "configs" / "zeroshot_k600.yaml")
    assert [Path(p).name for p in cfg.eval.splits] == [f"zs_draw{n}.txt" for n in (1, 2, 3)]
    assert [Path(p).name for p in cfg.eval.class_tables] == [f"zs_draw{n}_classes.csv" for n in (1, 2, 3)]


def test_k400_classes_only_for_k600(layout, tmp_path):
    from scripts.prepare_data import main

    root, k400 = layout
    with pytest.raises(SystemExit):
        main(["k400", "--root", str(root), "--out", str(tmp_path), "--k400-classes", str(k400)])
