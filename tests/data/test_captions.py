import pytest

from msta.data.annotations import AnnotationError, read_video_list
from msta.data.captions import (CaptionedVideo, CaptionItem, group_by_video, hold_out_videos, read_caption_list,
                                write_caption_list)

ITEMS = [CaptionItem("v/a b.mp4", "a man is cooking"), CaptionItem("v/c.mp4", "a cat, then a dog 2"),
         CaptionItem("v/a b.mp4", "someone cooks pasta in a kitchen")]


def test_caption_list_round_trip_and_format(tmp_path):
    p = write_caption_list(tmp_path / "sub" / "captions.txt", ITEMS)
    assert p.read_text() == ("v/a b.mp4\ta man is cooking\nv/c.mp4\ta cat, then a dog 2\n"
                             "v/a b.mp4\tsomeone cooks pasta in a kitchen\n")
    assert read_caption_list(p) == ITEMS


def test_blank_lines_comments_and_surrounding_spaces_are_skipped(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# MSR-VTT-like\n\n  \nv/a b.mp4\t a man is cooking \r\n   # indented comment\nv/c.mp4\tx\ty\n")
    assert read_caption_list(p) == [CaptionItem("v/a b.mp4", "a man is cooking"), CaptionItem("v/c.mp4", "x\ty")]


@pytest.mark.parametrize("line, message", [
    ("v/a.mp4 3", r"c.txt:2: 'v/a.mp4 3' looks like a label list line .*loss.kind=infonce needs caption lists"),
    ("v/a.mp4 a man is cooking", r"c.txt:2: no TAB in .*`relative/path.ext<TAB>caption`"),
    ("\ta man is cooking", r"c.txt:2: empty video path"),
    ("v/a.mp4\t  ", r"c.txt:2: empty caption after the TAB for video 'v/a.mp4'"),
])
def test_malformed_lines_name_file_line_and_format(tmp_path, line, message):
    p = tmp_path / "c.txt"
    p.write_text(f"v/ok.mp4\tfine\n{line}\n")
    with pytest.raises(AnnotationError, match=message):
        read_caption_list(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="caption list not found: .*nope.txt"):
        read_caption_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(AnnotationError, match="empty.txt: no `relative/path.ext<TAB>caption` lines"):
        read_caption_list(tmp_path / "empty.txt")


@pytest.mark.parametrize("item", [CaptionItem("a.mp4", "two\tparts"), CaptionItem("a.mp4", "two\nlines"),
                                  CaptionItem("a.mp4", ""), CaptionItem(" a.mp4", "x"), CaptionItem("a.mp4", "x ")])
def test_writer_refuses_what_would_not_read_back(tmp_path, item):
    with pytest.raises(ValueError, match="to read back as written"):
        write_caption_list(tmp_path / "c.txt", [item])


def test_a_caption_list_given_as_label_list_says_so(tmp_path):
    p = write_caption_list(tmp_path / "c.txt", ITEMS)
    with pytest.raises(AnnotationError, match=r"c.txt:1: label 'cooking'.*caption list.*loss.kind=infonce"):
        read_video_list(p)


def test_group_by_video_keeps_first_appearance_order():
    assert group_by_video(ITEMS) == [
        CaptionedVideo("v/a b.mp4", ("a man is cooking", "someone cooks pasta in a kitchen")),
        CaptionedVideo("v/c.mp4", ("a cat, then a dog 2",))]


def test_hold_out_keeps_every_caption_of_a_video_on_one_side():
    items = [CaptionItem(f"v{v:02d}.mp4", f"caption {c} of {v}") for c in range(3) for v in range(20)]
    kept, held = hold_out_videos(items, 0.25, seed=4)
    held_videos, kept_videos = {it.path for it in held}, {it.path for it in kept}
    assert len(held_videos) == 5 and len(kept_videos) == 15 and not held_videos & kept_videos
    assert len(held) == 15 and len(kept) == 45
    assert kept == [it for it in items if it.path in kept_videos]  # input order kept
    assert hold_out_videos(list(reversed(items)), 0.25, seed=4)[1][0].path in held_videos  # order-free draw
    assert {it.path for it in hold_out_videos(items, 0.25, seed=5)[1]} != held_videos
    assert hold_out_videos(items, 0.0, seed=4) == (items, [])


def test_caption_lines_of_hash_videos_are_read_and_comments_counted(tmp_path, caplog):
    """Issue 13 item 2: a line with a TAB is a pair even when the video name starts with `#` (HMDB51 has such)."""
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeff# captions, written by hand\n#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi\t# people clap\n"
                  "a (1) & b's.avi\tsomeone claps\n".encode("utf-8"))
    with caplog.at_level("WARNING"):
        items = read_caption_list(p)
    assert items == [CaptionItem("#20_Rhythm_clap_u_nm_np1_fr_goo_0.avi", "# people clap"),
                     CaptionItem("a (1) & b's.avi", "someone claps")]
    assert "2 caption pairs read; 1 comment line(s) skipped (lines 1" in caplog.text
