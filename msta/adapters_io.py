"""Adapters files: trained adapters as data, in the Hugging Face folder layout, readable by every command.

An adapters folder (``run/best/``, ``run/last/``, ``checkpoints/step_000120/adapters/``, or a Hub repository)::

    model.safetensors   the trainable tensors (fp32), safetensors: plain data, nothing in it can run code
    config.json         the msta format version, base model (name, pretrained tag), adapter config, the full resolved
                        run config, class names, raw labels, templates, step, epoch, metrics, and the sha256 of
                        model.safetensors (so a half-copied pair is caught)

Where an adapters file can come from (``resolve_adapters``, the same rule for ``--ckpt``, ``msta.load`` and
``model.init_adapters``):

- an adapters folder, or a file inside one;
- a run's ``best`` / ``last`` (the folder), also when written ``best.pt`` (the pre-folder name);
- a checkpoint step folder (its ``adapters/``);
- a local Hugging Face Hub cache entry (``.../models--org--name``: ``refs/main`` names the snapshot);
- ``hf-hub:org/name`` (optionally ``@revision``): looked up in the local Hub cache first, downloaded through
  ``huggingface_hub`` only when it is not there (the id itself is the request to download);
- an old ``.pt`` file of msta <= 0.1 (``torch.load(weights_only=True)``; a file that needs more than plain data is
  refused, never unpickled).

Training writes folders through ``save_adapters`` (a temporary folder renamed into place: a crash leaves the previous
folder, or the previous folder under ``.NAME.old-PID`` which ``resolve_adapters`` then falls back to).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from msta.errors import UserError

__all__ = [
    "ADAPTERS_FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE", "CONFIG_FILE", "HUB_PREFIX", "AdaptersFileError",
    "AdaptersNotFoundError",
    "adapter_payload", "save_adapters", "load_adapters", "resolve_adapters", "convert_legacy", "push_to_hub",
]

_logger = logging.getLogger(__name__)

ADAPTERS_FORMAT = "msta-adapters/1"   # the in-memory payload's tag (and that of the old .pt files)
FORMAT_VERSION = 2                     # config.json's "format_version"; 1 was the single .pt file
FORMAT_NAME = "msta-adapters"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HUB_PREFIX = "hf-hub:"
LEGACY_FILE = "adapters.pt"            # inside an old checkpoint step folder
STEP_ADAPTERS = "adapters"             # inside a new checkpoint step folder


class AdaptersFileError(UserError, ValueError):
    """A file or folder that is not a valid adapters file (the message names it and says why)."""


class AdaptersNotFoundError(UserError, FileNotFoundError):
    """Nothing to read where the user pointed (the message says what was tried)."""


def adapter_payload(*, state_dict: dict[str, torch.Tensor], config: dict, class_names: list[str],
                    raw_labels: list[str], templates: list[str], step: int, epoch: int,
                    metrics: Optional[dict] = None) -> dict:
    """Everything needed to use trained adapters: weights (fp32, CPU), the resolved config and the class prompts.

    Args:
        state_dict: `VideoCLIP.adapter_state_dict()` (trainable tensors only).
        config: `config_to_dict(cfg)` of the run.
        class_names: readable class names the prompts were built from (class-id order); empty for a caption run
            (loss.kind infonce), which trains without classes.
        raw_labels: the dataset's raw labels in the same order.
        templates: the prompt templates, e.g. ["a video of {}."].
        step, epoch: training progress when saved.
        metrics: e.g. {"val_top1": 61.2, "selected_on": "val"}.

    Returns:
        The in-memory payload (``save_adapters`` writes it, ``load_adapters`` returns one).
    """
    return {
        "format": ADAPTERS_FORMAT,
        "state_dict": {k: v.detach().to("cpu", torch.float32).clone() for k, v in state_dict.items()},
        "config": config, "class_names": list(class_names), "raw_labels": list(raw_labels),
        "templates": list(templates), "step": step, "epoch": epoch, "metrics": dict(metrics or {}),
    }


# ----------------------------------------------------------------------------------------------------------------
# writing


def _config_json(payload: dict, weights_sha256: str) -> dict:
    from msta import __version__

    config = payload.get("config") or {}
    model = config.get("model") or {}
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "msta_version": __version__,
        "base_model": {"name": model.get("name"), "pretrained": model.get("pretrained"),
                       "num_frames": model.get("num_frames")},
        "adapter_config": {k: model[k] for k in ("msta", "st_adapter") if k in model},
        "class_names": list(payload.get("class_names", [])), "raw_labels": list(payload.get("raw_labels", [])),
        "templates": list(payload.get("templates", [])),
        "step": payload.get("step"), "epoch": payload.get("epoch"), "metrics": dict(payload.get("metrics") or {}),
        "weights_sha256": weights_sha256,
        "run_config": config,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_adapters(payload: dict, folder: str | Path) -> Path:
    """Writes ``payload`` (``adapter_payload``) as an adapters folder, atomically.

    The files go to ``.NAME.tmp-PID`` next to ``folder``, which is then renamed into place; an existing folder is
    first moved to ``.NAME.old-PID`` and removed after, so at every moment one complete folder exists.

    Returns:
        The folder.
    """
    from safetensors.torch import save

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in payload["state_dict"].items()}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        blob = save(tensors, metadata={"format": "pt", "msta_format": f"{FORMAT_NAME}/{FORMAT_VERSION}"})
        _write_synced(tmp / WEIGHTS_FILE, blob)
        meta = _config_json(payload, hashlib.sha256(blob).hexdigest())
        _write_synced(tmp / CONFIG_FILE, (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode())
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _remove_stale(folder)
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def _remove_stale(folder: Path) -> None:
    """Removes ``.NAME.tmp-PID`` / ``.NAME.old-PID`` left by writers that died (a new complete folder now exists)."""
    for kind in ("tmp", "old"):
        for p in folder.parent.glob(f".{folder.name}.{kind}-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
                _logger.info("removed %s, left by an interrupted write", p)


def convert_legacy(pt_file: str | Path, folder: str | Path) -> Path:
    """Rewrites an old ``.pt`` adapters file (read as data only) as an adapters folder."""
    return save_adapters(load_adapters(pt_file), folder)


# ----------------------------------------------------------------------------------------------------------------
# finding


def _is_adapters_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _hub_cache_snapshot(entry: Path) -> Path:
    """The snapshot folder of a Hub cache entry (``models--org--name``): the one ``refs/main`` names, else the only."""
    snapshots = entry / "snapshots"
    ref = entry / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snapshots / rev).is_dir():
            return snapshots / rev
        raise AdaptersNotFoundError(f"{entry}: refs/main names snapshot {rev}, which is not in {snapshots}")
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise AdaptersNotFoundError(f"{entry} is a Hub cache entry without refs/main and with {len(found)} snapshots; "
                            "give the snapshot folder itself")


def _from_hub(spec: str, cache_dir: Optional[str | Path] = None) -> Path:
    """``hf-hub:org/name[@revision]`` -> the local snapshot folder (from the cache, downloading only when missing)."""
    repo = spec[len(HUB_PREFIX):].strip()
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise AdaptersFileError(f"{spec}: a Hub id is hf-hub:ORG/NAME (optionally @REVISION)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as e:   # pragma: no cover - installed with open_clip
        raise AdaptersFileError(f"{spec}: reading from the Hub needs huggingface_hub (`pip install "
                                f"huggingface_hub`): {e}") from None
    kwargs = dict(repo_id=repo, revision=revision or None, cache_dir=str(cache_dir) if cache_dir else None,
                  allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, "README.md"])
    try:
        return Path(snapshot_download(local_files_only=True, **kwargs))
    except LocalEntryNotFoundError:
        pass
    _logger.info("%s is not in the local Hub cache; downloading", spec)
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: one message naming the id
        raise AdaptersNotFoundError(f"{spec}: not in the local Hub cache and could not be downloaded "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the id, "
                                "the network (HF_HUB_OFFLINE), or give a local adapters folder") from None


def resolve_adapters(spec: str | Path, *, cache_dir: Optional[str | Path] = None) -> Path:
    """Where the adapters named by ``spec`` are: an adapters folder, or an old ``.pt`` file (see the module rules).

    Args:
        spec: a path or an ``hf-hub:`` id.
        cache_dir: the Hub cache for ``hf-hub:`` ids (default huggingface_hub's, ``HF_HUB_CACHE``).

    Raises:
        FileNotFoundError: nothing there; the message lists what was tried.
    """
    text = str(spec)
    if text.startswith(HUB_PREFIX):
        folder = _from_hub(text, cache_dir)
        if not _is_adapters_folder(folder):
            raise AdaptersFileError(f"{text} ({folder}) is not an msta adapters repository: it needs {CONFIG_FILE} "
                                    f"and {WEIGHTS_FILE}")
        return folder
    path = Path(text).expanduser()
    if path.is_file():
        if path.name in (CONFIG_FILE, WEIGHTS_FILE):
            return path.parent
        return path
    if path.is_dir():
        if _is_adapters_folder(path):
            return path
        if (path / "snapshots").is_dir() or (path / "refs").is_dir():
            return resolve_adapters(_hub_cache_snapshot(path))
        if _is_adapters_folder(path / STEP_ADAPTERS):
            return path / STEP_ADAPTERS
        if (path / LEGACY_FILE).is_file():
            return path / LEGACY_FILE
        hint = ""
        if any((path / n).exists() for n in ("best", "last", "best.pt", "last.pt")):
            hint = f"; this is a run folder: give {path / 'best'} or {path / 'last'}"
        elif (path / WEIGHTS_FILE).is_file() or (path / CONFIG_FILE).is_file():
            missing = CONFIG_FILE if not (path / CONFIG_FILE).is_file() else WEIGHTS_FILE
            raise AdaptersFileError(f"{path} is not a valid adapters file: {missing} is missing")
        raise AdaptersNotFoundError(f"no adapters in {path} (expected {CONFIG_FILE} + {WEIGHTS_FILE}){hint}")
    tried = [path]
    if path.suffix == ".pt":   # `run/best.pt` written before adapters became folders: the folder `run/best`
        stem = path.with_suffix("")
        tried.append(stem)
        if _is_adapters_folder(stem):
            return stem
    else:                      # `run/best` of an old run: the file `run/best.pt`
        legacy = path.with_name(path.name + ".pt")
        tried.append(legacy)
        if legacy.is_file():
            return legacy
    # an interrupted `save_adapters` between its two renames leaves the complete previous folder aside
    target = tried[-1] if path.suffix == ".pt" else path
    aside = sorted(target.parent.glob(f".{target.name}.old-*")) if target.parent.is_dir() else []
    for old in aside:
        if _is_adapters_folder(old):
            _logger.warning("%s is missing but %s (left by an interrupted write) is complete; using it", target, old)
            return old
    raise AdaptersNotFoundError(f"no adapters file at {path} (tried {', '.join(str(t) for t in tried)})")


# ----------------------------------------------------------------------------------------------------------------
# reading


def _invalid(path: Path, why: str) -> AdaptersFileError:
    return AdaptersFileError(f"{path} is not a valid adapters file: {why}")


def _check_state_dict(path: Path, state: Any) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise _invalid(path, "it holds no state dict (no adapter tensors)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise _invalid(path, f"its state dict holds non-tensor entries {bad[:3]}")
    return state


def _read_folder(folder: Path, *, retry: bool = True) -> dict:
    """Reads an adapters folder; once more when the pair looks mixed, since training may be swapping it right now."""
    try:
        return _read_folder_once(folder)
    except (AdaptersFileError, FileNotFoundError) as e:
        if not retry or not (isinstance(e, FileNotFoundError) or "sha256" in str(e)):
            raise
        _logger.debug("re-reading %s (%s)", folder, e)
        return _read_folder(folder, retry=False)


def _read_folder_once(folder: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    cfg_file, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    try:
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _invalid(cfg_file, f"not JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _invalid(cfg_file, f"no \"format\": \"{FORMAT_NAME}\" (is this an msta adapters folder?)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _invalid(cfg_file, f"format_version {version!r}; this msta reads up to {FORMAT_VERSION} (a newer msta "
                                 "wrote it: upgrade msta)")
    blob = weights.read_bytes()
    expected = meta.get("weights_sha256")
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise _invalid(weights, f"its sha256 does not match {CONFIG_FILE} (truncated, or the two files come from "
                                "different saves)")
    try:
        state = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise _invalid(weights, f"not a readable safetensors file ({e})") from None
    run_config = meta.get("run_config")
    if not isinstance(run_config, dict):
        raise _invalid(cfg_file, "no run_config")
    return {"format": ADAPTERS_FORMAT, "state_dict": _check_state_dict(weights, state), "config": run_config,
            "class_names": list(meta.get("class_names") or []), "raw_labels": list(meta.get("raw_labels") or []),
            "templates": list(meta.get("templates") or []), "step": meta.get("step"), "epoch": meta.get("epoch"),
            "metrics": dict(meta.get("metrics") or {}), "source": str(folder)}


def _read_legacy(path: Path) -> dict:
    """An msta <= 0.1 ``.pt`` file, read only as data (``weights_only=True``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdaptersFileError(
            f"{path} refused: it holds Python objects beyond plain tensors and values, and loading it could run "
            f"code ({first[:200]}). msta reads adapters only as data; if it is your own old file, convert it with "
            "an msta version that wrote it, or re-export the adapters") from None
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise _invalid(path, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             "truncated or not a torch file") from None
    if not isinstance(payload, dict) or payload.get("format") != ADAPTERS_FORMAT:
        raise _invalid(path, f"it is not an msta adapters file (no format {ADAPTERS_FORMAT!r})")
    _check_state_dict(path, payload.get("state_dict"))
    if not isinstance(payload.get("config"), dict):
        raise _invalid(path, "no run config")
    return {**payload, "source": str(path)}


def load_adapters(spec: str | Path, *, cache_dir: Optional[str | Path] = None) -> dict:
    """Reads adapters from anything ``resolve_adapters`` accepts.

    Returns:
        The ``adapter_payload`` dict (``state_dict``, ``config``, ``class_names``, ``raw_labels``, ``templates``,
        ``step``, ``epoch``, ``metrics``) plus ``source``, the folder or file read. Apply the weights with
        ``model.load_adapter_state_dict(payload["state_dict"])``.

    Raises:
        FileNotFoundError: nothing at ``spec``.
        AdaptersFileError (a ValueError): not a valid adapters file, or an old file that is not plain data.
    """
    where = resolve_adapters(spec, cache_dir=cache_dir)
    payload = _read_folder(where) if where.is_dir() else _read_legacy(where)
    _logger.debug("read adapters %s (%d tensors)", where, len(payload["state_dict"]))
    return payload


# ----------------------------------------------------------------------------------------------------------------
# sharing


def push_to_hub(adapters: str | Path, repo_id: str, *, private: bool = True, token: Optional[str] = None,
                commit_message: str = "msta adapters") -> str:
    """Uploads an adapters folder to the Hugging Face Hub (``huggingface_hub``: create the repo, upload the folder).

    Args:
        adapters: anything ``resolve_adapters`` accepts (an old ``.pt`` file is converted first).
        repo_id: ``org/name``; it is created when missing.
        private: create the repo private.
        token: a Hub token (default: huggingface_hub's login, ``HF_TOKEN``).
        commit_message: the commit's message.

    Returns:
        The ``hf-hub:org/name`` id the uploaded adapters are read back with.
    """
    import tempfile

    from huggingface_hub import HfApi

    where = resolve_adapters(adapters)
    load_adapters(where)   # never upload something this msta cannot read back
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = where if where.is_dir() else convert_legacy(where, Path(tmp) / "adapters")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                          allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, "README.md"])
    return f"{HUB_PREFIX}{repo_id}"
