"""The folder index: what it stores, incremental updates, refusal of another model, unreadable videos, and that an
interrupted or killed run keeps what it had written."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from msta.index import (IndexFileError, IndexMismatchError, load_index_model, read_index, scan_folder,
                        update_index)
from tests.index.conftest import good_videos

REPO = Path(__file__).resolve().parents[2]


def _rows(data) -> dict[str, torch.Tensor]:
    return {e.path: data.views[i] for i, e in enumerate(data.entries)}


def test_index_stores_the_evaluators_view_embeddings(folder, index_model, tmp_path):
    out = tmp_path / "videos.msta-index"
    report = update_index(folder, out, index_model, batch_size=4, progress=False)
    data = read_index(out)
    assert sorted(e.path for e in data.entries) == good_videos(folder)       # notes.txt is no video
    assert report.added == 18 and report.kept == report.updated == report.dropped == 0
    assert [(f.path, f.reason.split()[0]) for f in data.failed] == [("broken.mp4", "undecodable")]
    assert data.views.shape == (18, 2, 32)                                  # N x (2 clips x 1 crop) x E
    assert data.identity["adapters"] == index_model.identity["adapters"] != "none"
    assert data.identity["clips"] == 2 and data.ckpt == index_model.ckpt_path
    for e in data.entries[:4]:                                              # oracle: one video at a time
        st = (folder / e.path).stat()
        assert (e.size, e.mtime_ns) == (st.st_size, st.st_mtime_ns)
        alone = index_model.model.encode_video(index_model.read_views(folder / e.path)).float()
        torch.testing.assert_close(_rows(data)[e.path], alone, atol=1e-5, rtol=1e-4)


def test_rerun_embeds_only_new_and_changed_videos_and_drops_deleted(folder, index_model, tmp_path):
    out = tmp_path / "idx"
    update_index(folder, out, index_model, progress=False)
    first = _rows(read_index(out))
    again = update_index(folder, out, index_model, progress=False)
    assert (again.embedded, again.kept, again.dropped) == (0, 18, 0)

    videos = good_videos(folder)
    changed, deleted, other = folder / videos[0], folder / videos[1], folder / videos[-1]
    shutil.copyfile(other, changed)                   # new content under an old name
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    deleted.unlink()
    (folder / "new").mkdir()
    shutil.copyfile(other, folder / "new" / "copy.MP4")    # extensions in any case
    seen = []
    report = update_index(folder, out, index_model, progress=False, on_batch=seen.append)
    assert (report.added, report.updated, report.kept, report.dropped) == (1, 1, 16, 1)
    assert seen[-1] == 2                                    # only two videos were decoded and embedded
    data = read_index(out)
    rows = _rows(data)
    assert videos[1] not in rows and len(data.entries) == 18
    for path in videos[2:]:                                 # unchanged rows are carried over bit for bit
        assert torch.equal(rows[path], first[path])
    torch.testing.assert_close(rows[videos[0]], first[videos[-1]])
    torch.testing.assert_close(rows["new/copy.MP4"], first[videos[-1]])
    assert len(data.failed) == 1                           # the broken file is not tried again while unchanged


def test_broken_video_is_retried_once_it_changes(folder, index_model, tmp_path):
    out = tmp_path / "idx"
    update_index(folder, out, index_model, progress=False)
    shutil.copyfile(folder / good_videos(folder)[0], folder / "broken.mp4")
    report = update_index(folder, out, index_model, progress=False)
    data = read_index(out)
    assert report.updated == 1 and not data.failed and "broken.mp4" in {e.path for e in data.entries}


def test_index_of_another_model_or_folder_is_refused(folder, index_model, index_world, tmp_path):
    out = tmp_path / "idx"
    update_index(folder, out, index_model, progress=False)
    before = out.read_bytes()
    other = load_index_model(str(index_world["ckpt2"]), str(index_world["cfg"]))
    with pytest.raises(IndexMismatchError, match=r"adapters: index '[0-9a-f]{64}' vs now '[0-9a-f]{64}'"):
        update_index(folder, out, other, progress=False)
    one_clip = load_index_model(str(index_world["ckpt"]), str(index_world["cfg"]), ["eval.views.clips=1"])
    with pytest.raises(IndexMismatchError, match="clips: index 2 vs now 1"):
        update_index(folder, out, one_clip, progress=False)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder, elsewhere)
    with pytest.raises(IndexMismatchError, match="indexes the folder"):
        update_index(elsewhere, out, index_model, progress=False)
    assert out.read_bytes() == before                       # a refusal leaves the index alone
    report = update_index(folder, out, other, rebuild=True, progress=False)
    assert report.added == 18 and read_index(out).identity == other.identity


def test_interrupt_keeps_every_embedded_video(folder, index_model, tmp_path):
    out = tmp_path / "idx"

    def stop(done: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        update_index(folder, out, index_model, batch_size=2, flush_every=1000, flush_seconds=1e9, progress=False,
                     on_batch=stop)
    partial = read_index(out)
    assert len(partial.entries) + len(partial.failed) == 4
    report = update_index(folder, out, index_model, progress=False)
    assert report.kept == len(partial.entries) and report.embedded + report.kept == 18
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]      # no temporary file left behind


KILLED = """
import sys, time
from msta.index import load_index_model, update_index
model = load_index_model(sys.argv[3], sys.argv[4])
update_index(sys.argv[1], sys.argv[2], model, batch_size=1, flush_every=1, progress=False,
             on_batch=lambda done: time.sleep(0.3))
"""


@pytest.mark.slow
def test_killed_run_keeps_what_it_had_written(folder, index_world, index_model, tmp_path):
    """SIGKILL (no Python clean-up at all) mid-run: the file is a valid index of the videos written so far."""
    out = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(folder), str(out), str(index_world["ckpt"]),
                             str(index_world["cfg"])], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(read_index(out).entries) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the indexing process ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = read_index(out)
    assert 3 <= len(written.entries) < 18
    report = update_index(folder, out, index_model, progress=False)
    assert report.kept == len(written.entries) and report.embedded + report.kept == 18


TERMINATED = """
import sys, time
from msta.cli.index import stop_on_sigterm
from msta.index import load_index_model, update_index
stop_on_sigterm()
model = load_index_model(sys.argv[3], sys.argv[4])
def slow(done):
    print(done, flush=True)
    time.sleep(0.5)
update_index(sys.argv[1], sys.argv[2], model, batch_size=1, flush_every=1000, flush_seconds=1e9, progress=False,
             on_batch=slow)
"""


@pytest.mark.slow
def test_sigterm_writes_what_was_embedded(folder, index_world, tmp_path):
    """msta index turns SIGTERM into Ctrl-C: nothing embedded before it is lost, though no flush was due yet."""
    out = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", TERMINATED, str(folder), str(out), str(index_world["ckpt"]),
                             str(index_world["cfg"])], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        while int(proc.stdout.readline() or 99) < 3:
            pass
        assert not out.exists()                             # nothing written yet: the next flush is far away
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = read_index(out)
    assert 3 <= len(written.entries) + len(written.failed) < 19


def test_bad_inputs_are_one_message(folder, index_model, tmp_path):
    junk = tmp_path / "junk.msta-index"
    junk.write_bytes(b"not an index at all")
    with pytest.raises(IndexFileError, match="junk.msta-index is not a readable msta index"):
        update_index(folder, junk, index_model, progress=False)
    with pytest.raises(ValueError, match="is not a folder"):
        scan_folder(tmp_path / "nowhere")


def test_cli_index_exit_codes(folder, index_world, tmp_path, capsys):
    from msta.cli.index import main

    out = tmp_path / "idx"
    args = [str(folder), "--out", str(out), "--cfg", str(index_world["cfg"])]
    assert main(args + ["--ckpt", str(index_world["ckpt"])]) == 1          # one unreadable video: listed, exit 1
    captured = capsys.readouterr()
    assert f"cannot read {folder / 'broken.mp4'}: undecodable" in captured.err
    assert "18 videos (18 new, 0 changed, 0 unchanged, 0 dropped), 1 unreadable" in captured.out
    assert main(args + ["--ckpt", str(index_world["ckpt2"])]) == 2          # another model: refused
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "was built with another model" in err and "Traceback" not in err
    assert main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_decoding_workers_give_the_same_index(folder, index_model, tmp_path):
    """--workers: videos decoded in worker processes (which get the decoder, not the model) embed the same."""
    one = update_index(folder, tmp_path / "a", index_model, batch_size=4, progress=False)
    two = update_index(folder, tmp_path / "b", index_model, batch_size=4, workers=2, progress=False)
    a, b = read_index(tmp_path / "a"), read_index(tmp_path / "b")
    assert one.added == two.added == 18 and [f.path for f in b.failed] == ["broken.mp4"]
    assert [e.path for e in a.entries] == [e.path for e in b.entries]
    torch.testing.assert_close(a.views, b.views)


def test_scan_skips_hidden_and_linked_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "y.mp4").write_bytes(b"2")
    (tmp_path / ".hidden.mp4").write_bytes(b"3")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)     # a cycle: never entered
    (tmp_path / "link.mkv").symlink_to(tmp_path / "a" / "x.mp4")               # a linked file: listed
    (tmp_path / "doc.pdf").write_bytes(b"4")
    assert sorted(scan_folder(tmp_path)) == ["a/x.mp4", "link.mkv"]
