import pytest

from msta.data.annotations import (AnnotationError, VideoItem, read_class_table, read_index2cls_json,
                                   read_slowfast_csv, read_video_list, remap_labels, write_class_table,
                                   write_index2cls_json, write_slowfast_csv, write_video_list)

ITEMS = [VideoItem("brush_hair/a b.avi", 0), VideoItem("train/x/y.mp4", 12)]


def test_video_list_round_trip_and_format(tmp_path):
    p = write_video_list(tmp_path / "l.txt", ITEMS)
    assert p.read_text() == "brush_hair/a b.avi 0\ntrain/x/y.mp4 12\n"
    assert read_video_list(p) == ITEMS


def test_video_list_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("a.mp4 1\n\n# comment\nb.mp4 x\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:4: label 'x'"):
        read_video_list(p)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_video_list(tmp_path / "nope.txt")


def test_class_table_round_trip_with_commas(tmp_path):
    names = ["abseiling", "passing American football (in game)", "a, b"]
    p = write_class_table(tmp_path / "c.csv", names)
    assert p.read_text().splitlines()[0] == "id,name"
    assert read_class_table(p) == names


def test_class_table_must_be_0_to_n(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("id,name\n0,a\n2,b\n")
    with pytest.raises(AnnotationError, match="missing \\[1\\]"):
        read_class_table(p)
    p.write_text("0,a\n")
    with pytest.raises(AnnotationError, match="header"):
        read_class_table(p)


def test_slowfast_formats(tmp_path):
    p = write_slowfast_csv(tmp_path / "train.csv", ITEMS)
    assert p.read_text().splitlines()[0] == "brush_hair/a b.avi,0"
    assert read_slowfast_csv(p) == ITEMS
    q = write_slowfast_csv(tmp_path / "val.csv", ITEMS[1:], sep=" ")
    assert read_slowfast_csv(q) == ITEMS[1:]
    j = write_index2cls_json(tmp_path / "k-index2cls.json", ["a", "b"])
    assert read_index2cls_json(j) == ["a", "b"]


def test_remap_labels():
    assert remap_labels(ITEMS, {12: 0}) == [VideoItem("train/x/y.mp4", 0)]
