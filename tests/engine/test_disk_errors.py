"""A full disk while writing, and a read-only cache (issue 14 item 5): one message naming the file, nothing lost.

The full disk is real: a 256 KiB tmpfs where the tests run as root (CI containers do), and everywhere a file-size
limit (RLIMIT_FSIZE with SIGXFSZ ignored, so that a write past it fails with EFBIG) in a subprocess.
"""
import contextlib
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from msta.engine import checkpoint as ckpt
from tests.engine.helpers import REPO


@contextlib.contextmanager
def _mounted(path, options):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _payload(value, size=4):
    return ckpt.adapter_payload(state_dict={"a": torch.full((size,), float(value))}, config={}, class_names=["c"],
                                raw_labels=["c"], templates=["{}"], step=int(value), epoch=1)


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def test_full_disk_keeps_every_previous_file_and_names_the_one_it_was_writing(tmp_path):
    with _mounted(tmp_path / "small", "size=256k") as small:
        run = small / "run"
        ckpt.atomic_torch_save({"v": torch.ones(4)}, run / "state.pt")
        with pytest.raises(ckpt.DiskFullError, match=r"no space left while writing .*state\.pt.*previous state\.pt "
                                                     r"is kept"):
            ckpt.atomic_torch_save({"v": torch.ones(200_000)}, run / "state.pt")
        assert torch.equal(torch.load(run / "state.pt", weights_only=True)["v"], torch.ones(4))

        ckpt.save_adapters_checked(_payload(1), run / "last")
        with pytest.raises(ckpt.DiskFullError, match=r"no space left while writing .*last.*previous last/ is kept"):
            ckpt.save_adapters_checked(_payload(2, size=200_000), run / "last")
        assert ckpt.load_adapters(run / "last")["step"] == 1

        def engine(value, size):
            def write(folder):
                folder.mkdir(parents=True)
                torch.save({"w": torch.full((size,), float(value))}, folder / "state.pt")  # torch's own writer
            return write

        for step, size in ((1, 4), (2, 200_000)):
            call = lambda: ckpt.save_checkpoint(run, step, write_engine_state=engine(step, size),  # noqa: E731
                                                adapters=_payload(step), marker={"step": step, "epoch": step},
                                                rank=0, barrier=lambda: None, keep_last=2)
            if step == 1:
                call()
                continue
            with pytest.raises(ckpt.DiskFullError, match=r"no space left while writing .*step_000002.*previous "
                                                         r"checkpoints and adapters are kept") as e:
                call()
            assert "inline_container" not in str(e.value).split("(")[0]
        assert [p.name for p in ckpt.list_complete(run)] == ["step_000001"]
        assert ckpt.check_checkpoint(ckpt.checkpoint_dir(run, 1)) is None
        assert _leftovers(run) == []


_FSIZE = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, {repo!r})
    import torch
    from msta.engine import checkpoint as ckpt
    target = {target!r}
    ckpt.atomic_torch_save({{"v": torch.ones(4)}}, target)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    try:
        ckpt.atomic_torch_save({{"v": torch.ones(100_000)}}, target)
    except ckpt.DiskFullError as e:
        print("DiskFullError:", e)
""")


def test_file_size_limit_is_reported_like_a_full_disk(tmp_path):
    target = tmp_path / "last.pt"
    proc = subprocess.run([sys.executable, "-c", _FSIZE.format(repo=str(REPO), target=str(target))],
                          capture_output=True, text=True, timeout=120)
    assert f"DiskFullError: no space left while writing {target}" in proc.stdout, proc.stderr[-2000:]
    assert "the previous last.pt is kept" in proc.stdout
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_is_disk_full_reads_torch_messages_only_with_a_full_folder(tmp_path):
    import errno

    assert ckpt.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    assert not ckpt.is_disk_full(wrapped, tmp_path)  # plenty of room here: some other failure, keep its message
    assert not ckpt.is_disk_full(ValueError("bad"))


@pytest.fixture
def readonly_cache(tmp_path):
    path = tmp_path / "cache"
    if os.geteuid() == 0:
        with _mounted(path, "ro,size=64k"):
            yield path
    else:
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


def test_read_only_cache_is_a_warning_not_a_stop(readonly_cache, caplog):
    from msta.config import ModelCfg, MstaCfg
    from msta.engine.descriptions import compute_description_targets
    from msta.models import build_model

    model = build_model(ModelCfg(name="msta-tiny", pretrained=None, num_frames=2,
                                 msta=MstaCfg(text_blocks=(2, 2), vision_blocks=(1, 2), dim=8)))
    spatial = [["a red square", "a red thing"], ["a green circle", "a green thing"]]
    temporal = [["it moves left", "it goes left"], ["it moves right", "it goes right"]]
    with caplog.at_level(logging.WARNING, logger="msta"):
        logging.getLogger("msta").propagate = True
        out = compute_description_targets(model, spatial, temporal, model_name="msta-tiny", weights="random-init",
                                          cache_dir=readonly_cache / "descriptions")
    assert out.spatial.shape[0] == 2 and torch.isfinite(out.spatial).all()
    assert "going on without the cache" in caplog.text and str(readonly_cache) in caplog.text
    assert list(readonly_cache.iterdir()) == []
