"""MSR-VTT preparer on small stand-ins of both layouts (the annotation release and mmaction2's JSON files), with
captions that contain commas, quotes, TABs and newlines; placeholder videos (preparers never decode)."""
import csv
import json

import pytest

from msta.cli.prepare_data import main as prepare_main
from msta.data.annotations import AnnotationError
from msta.data.captions import CaptionItem, read_caption_list
from msta.data.msrvtt import clean_caption, prepare_msrvtt
from msta.data.preparers import prepare_dataset

# the release's 1k-A rows look like `ret0,msr9770,video9770,a person is connecting something to system`
TEST_IDS = [9770, 7020, 9771]
TRAIN_IDS = [0, 1, 2, 3]                    # the "9k" split here
TRAIN_7K_IDS = [0, 1]
TRICKY = 'a man says "hello, world"\tto the\ncamera'


def _captions(vid: int) -> list[str]:
    caps = [f"video {vid} caption {k}, with a comma" for k in range(3)]
    return [TRICKY, *caps[1:]] if vid == 1 else caps


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def _write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def release(tmp_path):
    """The annotation release: MSRVTT_data.json + the three csvs, videos under videos/all/; video3 is missing."""
    root = tmp_path / "msrvtt"
    for vid in TRAIN_IDS + TEST_IDS:
        if vid != 3:
            touch(root / "videos" / "all" / f"video{vid}.mp4")
    sentences, sen_id = [], 0
    for vid in TRAIN_IDS + TEST_IDS:
        for cap in _captions(vid):
            sentences.append({"sen_id": sen_id, "video_id": f"video{vid}", "caption": cap})
            sen_id += 1
    sentences.append({"sen_id": sen_id, "video_id": "video2", "caption": " \t "})   # empty after cleaning
    data = {"info": {"year": 2016}, "videos": [{"video_id": f"video{v}", "id": v} for v in TRAIN_IDS + TEST_IDS],
            "sentences": sentences}
    ann = root / "annotation"
    ann.mkdir(parents=True)
    (ann / "MSRVTT_data.json").write_text(json.dumps(data), encoding="utf-8")
    _write_csv(ann / "MSRVTT_train.9k.csv", ["video_id"], [[f"video{v}"] for v in TRAIN_IDS])
    _write_csv(ann / "MSRVTT_train.7k.csv", ["video_id"], [[f"video{v}"] for v in TRAIN_7K_IDS])
    test_rows = [[f"ret{i}", f"msr{v}", f"video{v}", f"test sentence {v}, \"quoted\""] for i, v in enumerate(TEST_IDS)]
    test_rows[1][3] = TRICKY
    _write_csv(ann / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"], test_rows)
    return root


def test_release_layout_gives_the_three_caption_lists(release):
    p = prepare_msrvtt(release)
    assert sorted(p.splits) == ["test_1k", "train_7k", "train_9k"]
    train = p.splits["train_9k"]
    assert [it.path for it in train][:3] == ["videos/all/video0.mp4"] * 3
    assert {it.path for it in train} == {f"videos/all/video{v}.mp4" for v in (0, 1, 2)}   # video3 missing
    assert len(train) == 9                                   # 3 captions each; the empty one skipped
    assert CaptionItem("videos/all/video1.mp4", 'a man says "hello, world" to the camera') in train
    assert len(p.splits["train_7k"]) == 6
    assert p.splits["test_1k"] == [
        CaptionItem("videos/all/video9770.mp4", 'test sentence 9770, "quoted"'),
        CaptionItem("videos/all/video7020.mp4", 'a man says "hello, world" to the camera'),
        CaptionItem("videos/all/video9771.mp4", 'test sentence 9771, "quoted"')]
    assert p.missing == ["video3"] and p.empty_captions == ["train_9k: video2"]
    assert p.sources["train_9k"] == "annotation/MSRVTT_train.9k.csv + annotation/MSRVTT_data.json"
    assert any("test_1k has 3 videos" in w for w in p.warnings)     # not the 1,000 of the protocol


def test_written_lists_read_back_exactly_and_report_missing(release, tmp_path):
    p = prepare_msrvtt(release)
    written = p.write(tmp_path / "lists")
    for split in ("train_9k", "train_7k", "test_1k"):
        assert read_caption_list(written[split]) == p.splits[split]
    report = written["report"].read_text()
    assert "missing\tvideo3" in report and "empty\ttrain_9k: video2" in report
    assert "source\ttest_1k\tannotation/MSRVTT_JSFUSION_test.csv" in report


def test_cli_registers_msrvtt_and_exits_1_on_missing_videos(release, tmp_path, capsys):
    assert prepare_main(["msrvtt", "--root", str(release), "--out", str(tmp_path / "lists")]) == 1
    out = capsys.readouterr().out
    assert "missing: video3" in out and "train_9k 3 videos / 9 captions" in out
    assert (tmp_path / "lists" / "test_1k.txt").is_file() and prepare_dataset("msrvtt", release).name == "msrvtt"
    touch(release / "videos" / "all" / "video3.mp4")
    assert prepare_main(["msrvtt", "--root", str(release), "--out", str(tmp_path / "lists")]) == 0
    capsys.readouterr()
    assert _exit_code(["msrvtt", "--root", str(release), "--out", str(tmp_path / "x"), "--protocols"]) == 2
    assert "msrvtt has none" in capsys.readouterr().err
    assert _exit_code(["msrvtt", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def _exit_code(argv) -> int:
    """The command's exit code, whether a usage error ends it through argparse (SystemExit) or a return."""
    try:
        return prepare_main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("suffix", [".mp4", ""])
def test_mmaction2_json_layout_with_and_without_the_mp4_suffix(tmp_path, suffix):
    root = tmp_path / "video_retrieval" / "msrvtt"
    for vid in TRAIN_IDS + TEST_IDS:
        touch(root / "videos" / f"video{vid}.mp4")
    (root / "train_9k.json").write_text(json.dumps({f"video{v}{suffix}": _captions(v) for v in TRAIN_IDS}))
    (root / "test_JSFUSION.json").write_text(json.dumps({f"video{v}{suffix}": [f"only caption of {v}"]
                                                         for v in TEST_IDS}))
    p = prepare_msrvtt(root)
    assert sorted(p.splits) == ["test_1k", "train_9k"]             # no train_7k.json: no such split
    assert len(p.splits["train_9k"]) == 12 and p.splits["train_9k"][0] == CaptionItem(
        "videos/video0.mp4", "video 0 caption 0, with a comma")
    assert CaptionItem("videos/video1.mp4", 'a man says "hello, world" to the camera') in p.splits["train_9k"]
    assert [it.caption for it in p.splits["test_1k"]] == [f"only caption of {v}" for v in TEST_IDS]
    assert p.missing == [] and p.sources["test_1k"] == "test_JSFUSION.json"


def test_release_files_win_over_mmaction2_files(release):
    (release / "test_JSFUSION.json").write_text(json.dumps({"video9770.mp4": ["another caption"]}))
    p = prepare_msrvtt(release)
    assert len(p.splits["test_1k"]) == 3 and p.sources["test_1k"].endswith("MSRVTT_JSFUSION_test.csv")


def test_overlap_between_train_and_test_is_warned(release):
    _write_csv(release / "annotation" / "MSRVTT_train.9k.csv", ["video_id"], [["video0"], ["video9770"]])
    p = prepare_msrvtt(release)
    assert any("1 test_1k videos are also in train_9k" in w for w in p.warnings)


def test_layout_mistakes_are_one_clear_error(tmp_path, release):
    with pytest.raises(AnnotationError, match="no MSR-VTT annotations under"):
        prepare_msrvtt(tmp_path / "msrvtt" / "videos")
    (release / "annotation" / "MSRVTT_data.json").unlink()
    with pytest.raises(AnnotationError, match="lists video ids only; their captions are in MSRVTT_data.json"):
        prepare_msrvtt(release)
    _write_csv(release / "annotation" / "MSRVTT_JSFUSION_test.csv", ["key", "video"], [["ret0", "video1"]])
    (release / "annotation" / "MSRVTT_train.9k.csv").unlink()
    (release / "annotation" / "MSRVTT_train.7k.csv").unlink()
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test.csv:1: expected the column\(s\) video_id, "
                                              "sentence"):
        prepare_msrvtt(release)


def test_clean_caption_makes_one_line():
    assert clean_caption("  a\tb\n\nc  ") == "a b c" and clean_caption(" \t\n") == ""
