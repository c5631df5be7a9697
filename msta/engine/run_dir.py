"""The run folder's safety rules: one run at a time, no silent reuse, no silent config change, no lost files.

`open_run_dir` is called by rank 0 before anything is written (the other ranks learn its outcome through a
broadcast, see `msta.engine.launch`). It

1. creates `train.out_dir` and takes an exclusive lock on `train.lock` inside it (`fcntl.flock`, released by the
   kernel on any exit, SIGKILL included; the file holds the holder's pid, so a second run is refused naming it, and a
   pid left by a dead holder is reported as a stale lock and taken over);
2. refuses a fresh run in a folder that holds an earlier one (metrics, adapters, checkpoints or a summary) unless
   `overwrite`, which moves the earlier run aside to `<out_dir>.old-<YYYYmmdd-HHMMSS>` (nothing is deleted);
3. on resume, compares the config with the run's `config.yaml`: keys that change the training trajectory are refused
   unless `allow_config_change` (then the old config is kept as `config.until-step_N.yaml` and the diff logged),
   harmless keys (logging, evaluation and checkpoint cadence, workers, ...) are accepted with a log line;
4. picks the checkpoint to resume from: the newest complete one that `check_checkpoint` finds whole, saying which
   file of a damaged one is bad (that folder is renamed `damaged-step_N`, not deleted) and which one it falls back to;
5. makes `last/` the adapters of the checkpoint resumed from (a kill or a full disk between the checkpoint and
   `last/` left it a step behind, and a run resumed at its end would never rewrite it);
6. removes what dead writers left (`.NAME.tmp-PID`), restores an adapters folder a kill left only as `.NAME.old-PID`,
   and moves the `metrics.jsonl` rows of steps after the resume point to `metrics.replaced.jsonl`, so that the log
   holds one row per step.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from msta.config import ConfigError, ExperimentCfg, config_from_dict, config_to_dict, dump_config
from msta.engine import checkpoint as ckpt
from msta.errors import UserError

__all__ = ["RunDirError", "RunDir", "LOCK_FILE", "open_run_dir", "config_diff", "HARMLESS_KEYS"]

_logger = logging.getLogger(__name__)

LOCK_FILE = "train.lock"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
REPLACED_METRICS = "metrics.replaced.jsonl"
# what a run leaves once it has trained: any of these makes the folder "an earlier run"
_RUN_OUTPUTS = ("best", "last", "best.pt", "last.pt", "train_summary.json", "checkpoints")
# keys that do not change what is trained (prefix match on dotted keys)
HARMLESS_KEYS = ("name", "train.out_dir", "train.log_every", "train.eval_every", "train.ckpt_every",
                 "train.keep_last", "train.max_steps", "train.micro_batch", "data.num_workers",
                 "data.max_bad_fraction", "model.perf.cache_descriptions", "eval.")
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


class RunDirError(UserError):
    """The run folder cannot be used as asked (in use, holds another run, config changed, no good checkpoint)."""


@dataclasses.dataclass
class RunDir:
    """An opened run folder: where to resume from, what was decided (to log), and the lock to release.

    Attributes:
        path: the run folder.
        start: the checkpoint folder to resume from, or None for a fresh start.
        notes: messages for the run log (logged once the log file exists).
    """
    path: Path
    start: Optional[Path] = None
    notes: list[str] = dataclasses.field(default_factory=list)
    _lock_fd: Optional[int] = None

    def release(self) -> None:
        """Releases the lock (the kernel does it too when the process ends, however it ends)."""
        if self._lock_fd is None:
            return
        try:
            os.ftruncate(self._lock_fd, 0)  # an empty lock file: nobody holds it, nothing stale
        except OSError:
            pass
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = None


def open_run_dir(cfg: ExperimentCfg, *, resume: Optional[str], overwrite: bool = False,
                 allow_config_change: bool = False) -> RunDir:
    """Locks and prepares `cfg.train.out_dir` for this run (rank 0 only; see the module docstring).

    Args:
        cfg: the run's config.
        resume: None (fresh run), "auto", or a checkpoint folder.
        overwrite: a fresh run may move an earlier run in the folder aside.
        allow_config_change: a resume may change keys that alter training (both configs kept, diff logged).

    Returns:
        The opened `RunDir`, holding the lock; call `release()` when the run ends.

    Raises:
        RunDirError: the folder is in use, holds an earlier run, or the config changed; the message says what to do.
    """
    path = Path(cfg.train.out_dir)
    if resume and overwrite:
        raise RunDirError(f"--overwrite starts a new run in {path} and --resume continues the one there: give one")
    _make_dir(path)
    run = RunDir(path)
    run._lock_fd = _lock(path, run.notes)
    try:
        _clean_stale_temps(path, run.notes)
        if not resume:
            if _holds_a_run(path):
                if not overwrite:
                    raise RunDirError(
                        f"{path} holds an earlier run ({_describe(path)}). To continue it: --resume auto; to keep it "
                        f"and start anew elsewhere: another train.out_dir (e.g. --opts train.out_dir={path}-2); to "
                        f"move it aside and start here: --overwrite (it becomes {_aside_name(path)})")
                run = _move_aside(run)
            dump_config(cfg, path / CONFIG_FILE)
            _truncate_metrics(path, 0, run.notes)
            return run
        run.start = _pick_checkpoint(resume, path, run.notes)
        _check_config(cfg, path, run, allow_config_change)
        _sync_last(path, run.start, run.notes)
        step = ckpt.read_marker(run.start)["step"] if run.start is not None else 0
        _truncate_metrics(path, step, run.notes)
        return run
    except BaseException:
        run.release()
        raise


# ----------------------------------------------------------------------------------------------------------------
# folder and lock


def _make_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise RunDirError(f"train.out_dir={path} is a file, not a folder; choose another train.out_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"train.out_dir={path}: cannot create the run folder ({e.strerror}: {e.filename}); "
                          "choose another train.out_dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"train.out_dir={path} is not writable; choose another train.out_dir")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        holder = json.loads(text) if text else {}
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _lock(path: Path, notes: list[str]) -> int:
    """Takes the exclusive lock on `path/train.lock` and writes this process's pid into it; returns the fd."""
    lock = path / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read_holder(fd)
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunDirError(f"{lock}: cannot lock the run folder ({e.strerror}); choose another train.out_dir "
                              "on a file system with locks") from None
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        since = f" since {holder['started']}" if holder.get("started") else ""
        raise RunDirError(f"{path} is in use by another training run ({who}{since}; lock file {lock}). Wait for it "
                          "to end, or choose another train.out_dir") from None
    holder = _read_holder(fd)
    if holder.get("pid") and holder.get("pid") != os.getpid():
        alive = holder.get("host") == socket.gethostname() and _pid_alive(int(holder["pid"]))
        state = "a process that no longer holds it" if alive else "no longer running"
        notes.append(f"{lock}: a stale lock of pid {holder['pid']} ({state}) was left; taken over")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode() + b"\n")
    os.fsync(fd)
    return fd


def _holds_a_run(path: Path) -> bool:
    """Whether training happened in `path` (a config and a log alone are an attempt that never trained)."""
    metrics = path / METRICS_FILE
    if metrics.is_file() and metrics.stat().st_size > 0:
        return True
    for name in _RUN_OUTPUTS:
        p = path / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            return True
    return False


def _describe(path: Path) -> str:
    found = [n for n in (METRICS_FILE, *_RUN_OUTPUTS) if (path / n).exists()]
    done = ckpt.list_complete(path)
    text = ", ".join(found)
    if done:
        text += f"; last checkpoint {done[-1].name}"
    return text


def _aside_name(path: Path) -> Path:
    base = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def _move_aside(run: RunDir) -> RunDir:
    """Renames the earlier run's folder (lock included) and locks a new, empty folder in its place."""
    aside = _aside_name(run.path)
    os.rename(run.path, aside)
    fresh = RunDir(run.path)
    try:
        _make_dir(fresh.path)
        fresh._lock_fd = _lock(fresh.path, fresh.notes)
    finally:
        run.release()
    (aside / LOCK_FILE).unlink(missing_ok=True)
    fresh.notes = run.notes + fresh.notes + [f"--overwrite: the earlier run in {run.path} was moved to {aside} "
                                             "(nothing deleted)"]
    return fresh


def _clean_stale_temps(path: Path, notes: list[str]) -> None:
    """Removes `.NAME.tmp-PID` files and folders of dead writers; an `.NAME.old-PID` whose NAME is missing (a kill
    between the two renames of an adapters swap) is restored, one whose NAME exists is removed."""
    for p in list(path.iterdir()) + list((path / "checkpoints").glob(".tmp-*") if (path / "checkpoints").is_dir()
                                         else []):
        m = _TMP.match(p.name)
        if p.name.startswith(".tmp-") and p.parent.name == "checkpoints":
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"removed {p}, a checkpoint an interrupted run did not finish")
            continue
        if m is None or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        target = path / m["name"]
        if m["kind"] == "old" and not target.exists():
            os.rename(p, target)
            notes.append(f"restored {target} from {p.name}, left by an interrupted write")
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        notes.append(f"removed {p}, left by pid {m['pid']} (no longer running)")


# ----------------------------------------------------------------------------------------------------------------
# resume: checkpoint, config, metrics


def _pick_checkpoint(resume: str, path: Path, notes: list[str]) -> Optional[Path]:
    if resume != "auto":
        folder = Path(resume)
        if not (folder / ckpt.COMPLETE).is_file():
            done = ckpt.list_complete(path)
            raise RunDirError(f"--resume {resume}: not a complete checkpoint folder (no '{ckpt.COMPLETE}' marker); "
                              f"complete ones in {path}: {[str(d) for d in done] or 'none'}; or --resume auto")
        problem = ckpt.check_checkpoint(folder)
        if problem:
            raise RunDirError(f"--resume {resume}: the checkpoint is damaged: {folder / problem}. "
                              f"Resume from another one ({[d.name for d in ckpt.list_complete(path)]}) or "
                              "--resume auto")
        return folder
    done = ckpt.list_complete(path)
    if not done:
        notes.append(f"--resume auto: no complete checkpoint in {path}; starting a fresh run")
        return None
    for i, folder in enumerate(reversed(done)):
        problem = ckpt.check_checkpoint(folder)
        if problem is None:
            return folder
        damaged = folder.with_name(f"damaged-{folder.name}")
        n = 2
        while damaged.exists():
            damaged, n = folder.with_name(f"damaged-{folder.name}-{n}"), n + 1
        os.rename(folder, damaged)
        previous = done[-2 - i] if i + 1 < len(done) else None
        notes.append(f"--resume auto: checkpoint {folder} is damaged: {problem}; kept as {damaged.name}; "
                     + (f"falling back to the previous complete checkpoint {previous}" if previous
                        else "no earlier complete checkpoint"))
        if previous is None:
            raise RunDirError(f"--resume auto: the only complete checkpoint {folder} is damaged ({problem}; kept as "
                              f"{damaged}); nothing to resume from. Start again with --overwrite (the run is moved "
                              "aside) or another train.out_dir")
    return None  # unreachable: the loop returns or raises


def _sync_last(path: Path, start: Optional[Path], notes: list[str]) -> None:
    """Restores `last/` from the checkpoint's own adapters when it is missing or holds another step."""
    if start is None or not (start / "adapters").is_dir():
        return
    step = ckpt.read_marker(start)["step"]
    try:
        current = ckpt.load_adapters(path / "last")["step"] if (path / "last").exists() else None
    except Exception:  # noqa: BLE001 - an unreadable last/ is replaced like a stale one
        current = "unreadable"
    if current != step:
        ckpt.save_adapters_checked(ckpt.load_adapters(start / "adapters"), path / "last")
        notes.append(f"{path / 'last'} held step {current}; restored step {step} from {start / 'adapters'}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_diff(old: dict, new: dict) -> tuple[list[str], list[str]]:
    """(trajectory-changing, harmless) differences between two config dicts, as `key: old -> new` lines."""
    a, b = _flatten(old), _flatten(new)
    changing, harmless = [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") == b.get(key, "<absent>"):
            continue
        line = f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
        (harmless if any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS_KEYS)
         else changing).append(line)
    return changing, harmless


def _check_config(cfg: ExperimentCfg, path: Path, run: RunDir, allow: bool) -> None:
    saved = path / CONFIG_FILE
    new = config_to_dict(cfg)
    if not saved.is_file():
        dump_config(cfg, saved)
        if run.start is not None:
            run.notes.append(f"resume: {saved} was missing; wrote this run's config")
        return
    try:
        old_raw = yaml.safe_load(saved.read_text()) or {}
        try:  # filled with today's defaults, so a key added since the run was started is not a change
            old = config_to_dict(config_from_dict(old_raw))
        except ConfigError:
            old = old_raw
    except (OSError, yaml.YAMLError) as e:
        raise RunDirError(f"resume: the run's {saved} is unreadable ({e}); restore it, or remove it to resume with "
                          "the given config") from None
    changing, harmless = config_diff(old, new)
    if not changing and not harmless:
        return
    step = ckpt.read_marker(run.start)["step"] if run.start is not None else 0
    if changing and not allow:
        raise RunDirError(f"--resume: the config differs from the run's {saved} in keys that change training: "
                          f"{'; '.join(changing)}. Resume with the run's config (drop these changes), start a new "
                          "run in another train.out_dir, or pass --allow-config-change to continue with the new "
                          "values (both configs are kept)")
    if changing:
        kept = path / f"config.until-step_{step:06d}.yaml"
        n = 2
        while kept.exists():
            kept, n = path / f"config.until-step_{step:06d}-{n}.yaml", n + 1
        os.replace(saved, kept)
        run.notes.append(f"--allow-config-change: resuming at step {step} with a changed config; the old one is "
                         f"kept as {kept.name}; changes: {'; '.join(changing + harmless)}")
    else:
        run.notes.append(f"resume: config.yaml updated with changes that do not alter training: {'; '.join(harmless)}")
    dump_config(cfg, saved)


def _truncate_metrics(path: Path, step: int, notes: list[str]) -> None:
    """Keeps the metrics rows of steps <= `step` (what the checkpoint covers); later rows, which the resumed run
    writes again, move to metrics.replaced.jsonl."""
    metrics = path / METRICS_FILE
    if not metrics.is_file() or metrics.stat().st_size == 0:
        return
    keep, drop = [], []
    for line in metrics.read_text().splitlines(keepends=True):
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            drop.append(line)  # a line a kill cut short
            continue
        (keep if row_step <= step else drop).append(line if line.endswith("\n") else line + "\n")
    if not drop:
        return
    with open(path / REPLACED_METRICS, "a") as f:
        f.writelines(d if d.endswith("\n") else d + "\n" for d in drop)
    tmp = metrics.with_name(f".{metrics.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(keep))
    os.replace(tmp, metrics)
    notes.append(f"{metrics}: {len(drop)} rows of steps after {step} (repeated by this run) moved to "
                 f"{REPLACED_METRICS}")
