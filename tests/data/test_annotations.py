import pytest

from msta.data.annotations import (AnnotationError, VideoItem, check_labels, read_class_table, read_index2cls_json,
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


# ------------------------------------------------------------------------------------------------------------------
# issue 13 item 2: every line of a published list is read (HMDB51 has video names that start with `#`)

# HMDB51's 51 classes (sorted; the ids of the lists below)
HMDB51 = ("brush_hair cartwheel catch chew clap climb climb_stairs dive draw_sword dribble drink eat fall_floor "
          "fencing flic_flac golf handstand hit hug jump kick kick_ball kiss laugh pick pour pullup punch push pushup "
          "ride_bike ride_horse run shake_hands shoot_ball shoot_bow shoot_gun sit situp smile smoke somersault "
          "stand swing_baseball sword sword_exercise talk throw turn walk wave").split()


def _few_shot_16_lines() -> list[str]:
    """A list in the convention of ViFi-CLIP's `train1_few_shot_16.txt`: 51 x 16 `<video>.avi <label>` lines.

    Two of the videos have HMDB51's real kind of name that starts with `#` (the first is a real HMDB51 name, the
    second one of the same form), and others hold `(`, `)`, `&` and `'` as HMDB51 names do.
    """
    special = {("clap", 0): "#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi",
               ("ride_bike", 3): "#437_How_To_Ride_A_Bike_ride_bike_f_cm_np1_ba_med_0.avi",
               ("kiss", 1): "Veoh_Alpha_Dog_1_(of_5)_kiss_h_nm_np2_fr_goo_2.avi",
               ("smile", 2): "Rock_&_Roll_Smile_smile_h_nm_np1_fr_goo_0.avi",
               ("laugh", 4): "Don't_Laugh_laugh_h_nm_np1_fr_goo_1.avi"}
    return [f"{special.get((c, k), f'{c}_video_{k}_{c}_f_nm_np1_fr_med_{k}.avi')} {i}"
            for i, c in enumerate(HMDB51) for k in range(16)]


def test_every_line_of_a_published_few_shot_list_is_read(tmp_path, caplog):
    lines = _few_shot_16_lines()
    p = tmp_path / "train1_few_shot_16.txt"
    p.write_text("\n".join(lines) + "\n")
    assert len(lines) == 816
    with caplog.at_level("WARNING"):
        items = read_video_list(p)
    assert len(items) == 816 and [it.path + f" {it.label}" for it in items] == lines  # was 814 (two '#' names lost)
    counts = [0] * 51
    for it in items:
        counts[it.label] += 1
    assert counts == [16] * 51
    assert VideoItem("#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", HMDB51.index("clap")) in items
    assert "comment" not in caplog.text  # nothing was skipped, so nothing is reported


def test_comment_lines_are_counted_and_logged_and_never_a_video(tmp_path, caplog):
    p = tmp_path / "l.txt"
    p.write_text("# my split, made by hand\n#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi 4\n\n#\na b.avi 1\n")
    with caplog.at_level("WARNING"):
        items = read_video_list(p)
    assert items == [VideoItem("#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", 4), VideoItem("a b.avi", 1)]
    assert "2 videos read; 2 comment line(s) skipped (lines 1, 4" in caplog.text and "l.txt" in caplog.text


def test_slowfast_list_reads_hash_names(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("\ufeff#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi,4\n# header comment\nx (1).avi,0\n")
    assert read_slowfast_csv(p) == [VideoItem("#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", 4), VideoItem("x (1).avi", 0)]


def test_lists_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes("\ufeffa.avi 0\r\nb.avi 1\r\n".encode("utf-8"))
    assert read_video_list(p) == [VideoItem("a.avi", 0), VideoItem("b.avi", 1)]


# ------------------------------------------------------------------------------------------------------------------
# class tables: the one reader (issue 13 item 2, issue 14 item 10)


def test_class_table_saved_by_excel_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_bytes(("\ufeffid,name\r\n" + "".join(f"{i},{c}\r\n" for i, c in enumerate(HMDB51))).encode("utf-8"))
    assert read_class_table(p) == HMDB51


def test_class_table_reads_every_row_and_names_starting_with_hash(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("id,name\n0,#hashtag dance\n\n1,rock & roll (fast)\n2,don't\n")
    assert read_class_table(p) == ["#hashtag dance", "rock & roll (fast)", "don't"]


@pytest.mark.parametrize("text, match", [
    ("name,id\n0,a\n", r"c.csv:1: a class table starts with the header `id,name`"),
    ("", "empty file"),
    ("id,name\n0,a\n2,b\n", r"0..1 without gaps; missing \[1\]"),
    ("id,name\nx,a\n", r"c.csv:2: class id 'x' is not an integer"),
    ("id,name\n0,a\n0,b\n", r"c.csv:3: id 0 appears twice"),
    ("id,name\n0,kick\n1,kick\n", r"c.csv:3: class name 'kick' appears twice \(also on line 2\)"),
])
def test_bad_class_tables_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "c.csv"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=match):
        read_class_table(p)


def test_the_text_importer_uses_the_same_class_table_reader():
    import msta.text
    import msta.text.importer

    assert msta.text.read_class_table is read_class_table and msta.text.importer.read_class_table is read_class_table


def test_check_labels_names_file_line_and_value(tmp_path):
    p = tmp_path / "train.txt"
    p.write_text("a.avi 0\n# note\nb.avi 9\nc.avi 12\n")
    check_labels(read_video_list(p)[:1], 4, p)
    with pytest.raises(AnnotationError, match=r"train.txt:3: label 9 of 'b.avi' is not a class of the class table "
                                              r"t.csv \(4 classes, ids 0..3\); 2 line\(s\)"):
        check_labels(read_video_list(p), 4, p, "t.csv")
