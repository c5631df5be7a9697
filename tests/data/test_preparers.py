"""Each preparer on a small fake archive layout (empty placeholder videos: preparers never decode)."""
import json

from msta.data.annotations import VideoItem, read_class_table, read_video_list
from msta.data.preparers import prepare_dataset, write_prepared, write_protocol_splits


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_hmdb51(tmp_path):
    root = tmp_path / "hmdb"
    classes = ["brush_hair", "cartwheel", "wave"]
    for c in classes:
        lines = []
        for k in range(6):
            if not (c == "wave" and k == 4):  # one annotated test video is missing
                touch(root / "videos" / c / f"{c}_{k}.avi")
            lines.append(f"{c}_{k}.avi {[1, 1, 1, 2, 2, 0][k]}")
        for s in (1, 2, 3):
            touch(root / "splits" / f"{c}_test_split{s}.txt")
            (root / "splits" / f"{c}_test_split{s}.txt").write_text("\n".join(lines) + "\n")
    touch(root / "zz_copy" / "cartwheel_0.avi")  # a duplicate file name (sorted first path wins)
    p = prepare_dataset("hmdb51", root)
    assert p.classes == classes
    assert sorted(p.splits) == ["test1", "test2", "test3", "train1", "train2", "train3"]
    assert len(p.splits["train1"]) == 9 and len(p.splits["test1"]) == 5
    assert VideoItem("videos/cartwheel/cartwheel_0.avi", 1) in p.splits["train1"]
    assert p.missing == ["wave_4.avi"] and "cartwheel_0.avi" in p.duplicates
    out = write_prepared(p, tmp_path / "lists")
    assert read_class_table(out["classes"]) == classes and read_video_list(out["train2"]) == p.splits["train2"]
    assert "missing\twave_4.avi" in out["report"].read_text()


def test_ucf101(tmp_path):
    root = tmp_path / "ucf"
    (root / "ucfTrainTestlist").mkdir(parents=True)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n")
    train, test = [], []
    for c, folder_case in (("ApplyEyeMakeup", "ApplyEyeMakeup"), ("HandstandPushups", "HandStandPushups")):
        for g in range(3):
            name = f"v_{folder_case}_g0{g}_c01.avi"
            touch(root / "UCF-101" / c / name)
            (train if g < 2 else test).append((f"{folder_case}/{name}", c))
    lab = {"ApplyEyeMakeup": 1, "HandstandPushups": 2}
    (root / "ucfTrainTestlist" / "trainlist01.txt").write_text("".join(f"{p} {lab[c]}\n" for p, c in train))
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("".join(f"{p}\n" for p, _ in test))
    p = prepare_dataset("ucf101", root)
    assert p.classes == ["ApplyEyeMakeup", "HandstandPushups"] and not p.missing
    assert [it.label for it in p.splits["train1"]] == [0, 0, 1, 1]
    assert p.splits["test1"] == [VideoItem("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi", 0),
                                 VideoItem("UCF-101/HandstandPushups/v_HandStandPushups_g02_c01.avi", 1)]


def test_kinetics(tmp_path):
    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split\n"
    rows = {"train": [("abseiling", "aaa", 10), ("abseiling", "bbb", 0), ("passing American football (in game)",
                                                                          "ccc", 5)],
            "validate": [("abseiling", "ddd", 3), ("passing American football (in game)", "eee", 7)]}
    for split, rs in rows.items():
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{split}.csv").write_text(
            header + "".join(f'"{c}",{y},{t},{t + 10},{split}\n' for c, y, t in rs))
    touch(root / "train" / "abseiling" / "aaa_000010_000020.mp4")       # class folders
    touch(root / "train" / "bbb_000000_000010.mp4")                      # flat
    touch(root / "val" / "ddd_000003_000013.mp4")
    touch(root / "val" / "eee_000007_000017.mp4")
    touch(root / "other" / "eee_000007_000017.mp4")                      # duplicate
    p = prepare_dataset("k400", root)
    assert p.classes == ["abseiling", "passing American football (in game)"]
    assert p.splits["train"] == [VideoItem("train/abseiling/aaa_000010_000020.mp4", 0),
                                 VideoItem("train/bbb_000000_000010.mp4", 0)]
    assert p.missing == ["ccc_000005_000015"] and list(p.duplicates) == ["eee_000007_000017"]
    assert p.splits["val"][1] == VideoItem("other/eee_000007_000017.mp4", 1)
    assert read_class_table(write_prepared(p, tmp_path / "out")["classes"]) == p.classes


def test_ssv2(tmp_path):
    root = tmp_path / "ssv2"
    labels = {"Approaching something with your camera": "0", "Holding something next to something": "1"}
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "labels.json").write_text(json.dumps(labels))
    train = [{"id": "1", "template": "Holding [something] next to [something]", "label": "holding a cup next to x"},
             {"id": "2", "template": "Approaching [something] with your camera", "label": "approaching a door"}]
    val = [{"id": "3", "template": "Approaching [something] with your camera", "label": "approaching a tv"}]
    (root / "labels" / "train.json").write_text(json.dumps(train))
    (root / "labels" / "validation.json").write_text(json.dumps(val))
    for i in ("1", "2", "3"):
        touch(root / "20bn-something-something-v2" / f"{i}.webm")
    p = prepare_dataset("ssv2", root)
    assert p.classes == list(labels)
    assert p.splits["train"] == [VideoItem("20bn-something-something-v2/1.webm", 1),
                                 VideoItem("20bn-something-something-v2/2.webm", 0)]
    assert p.splits["val"] == [VideoItem("20bn-something-something-v2/3.webm", 0)]


def test_prepare_script_and_protocol_files(tmp_path):
    from scripts.prepare_data import main

    root = tmp_path / "hmdb"
    for c in [f"class{i}" for i in range(4)]:
        lines = []
        for k in range(20 + (4 if c in ("class1", "class3") else 0)):
            touch(root / c / f"{c}_{k}.avi")
            lines.append(f"{c}_{k}.avi {1 if k < 16 + (4 if c in ('class1', 'class3') else 0) else 2}")
        (root / f"{c}_test_split1.txt").write_text("\n".join(lines))
    out = tmp_path / "lists"
    assert main(["hmdb51", "--root", str(root), "--out", str(out), "--protocols"]) == 0
    assert len(read_video_list(out / "train1_few_shot_8.txt")) == 32
    assert read_class_table(out / "b2n" / "base_labels.csv") == ["class1", "class3"]  # the more frequent half
    assert len(read_video_list(out / "b2n" / "fs_base_s2_train.txt")) == 32
    assert {it.label for it in read_video_list(out / "b2n" / "novel_val.txt")} == {0, 1}
