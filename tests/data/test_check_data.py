import subprocess
import sys
from pathlib import Path

from msta.data.annotations import VideoItem, write_video_list

from .conftest import gray_video

REPO = Path(__file__).resolve().parents[2]


def run_check(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_data.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_check_data_reports_every_bad_file(tmp_path):
    gray_video(tmp_path / "a.mp4", 8)
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    write_video_list(tmp_path / "good.txt", [VideoItem("a.mp4", 0)])
    write_video_list(tmp_path / "list.txt", [VideoItem("a.mp4", 0), VideoItem("broken.mp4", 1),
                                             VideoItem("gone.mp4", 1)])
    r = run_check(tmp_path / "list.txt", "--root", tmp_path)
    assert r.returncode == 1, r.stderr
    assert "2 of 3 videos are bad" in r.stdout and "broken.mp4" in r.stdout and "gone.mp4" in r.stdout
    assert "missing" in r.stdout and "undecodable" in r.stdout



def test_check_data_main_options(tmp_path, capsys):
    from scripts.check_data import main

    gray_video(tmp_path / "a.mp4", 8)
    write_video_list(tmp_path / "good.txt", [VideoItem("a.mp4", 0)])
    assert main([str(tmp_path / "good.txt"), "--root", str(tmp_path), "--full", "--min-frames", "8"]) == 0
    assert main([str(tmp_path / "good.txt"), "--root", str(tmp_path), "--min-frames", "9", "--backend", "pyav"]) == 1
    assert "too_short" in capsys.readouterr().out
