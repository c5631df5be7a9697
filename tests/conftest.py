"""Shared test set-up: two threads, CPU only, no network, DeepSpeed told it runs on CPU."""
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(2)


import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def launcher_env(monkeypatch, tmp_path):
    """The variables a launcher would set for one process, a private cache; msta's run logging undone afterwards."""
    from msta.engine.distributed import free_port

    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu",
                 "MSTA_CACHE_DIR": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    yield
    root = logging.getLogger("msta")  # undo setup_logging for the tests that follow
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.propagate, root.level = True, logging.NOTSET
