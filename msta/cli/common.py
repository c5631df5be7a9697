"""What every msta command shares: the parser (examples in --help, `--opts KEY=VALUE`, `--debug`), one log format,
and the wrapper that ends every user mistake as one message with exit code 2.

The convention of all commands:
- ``--cfg CONFIG``: an experiment YAML, or the name of a shipped one (``--cfg fewshot_hmdb``).
- ``--ckpt PATH [PATH ...]``: adapters (a run's ``best``/``last``, an adapters folder or file); one or more where a
  command can use several (eval: seeds or shots), exactly one elsewhere.
- ``--out PATH``: where the command writes its result (a folder for evaluations, a file for JSON outputs); a command
  checks that it can write there before any work.
- ``--opts KEY=VALUE ...``: dotted config overrides; it takes only ``KEY=VALUE`` tokens, so a positional argument
  after it is still a positional argument; may be repeated.
- ``--debug``: show the traceback of an error (it is always written to the run's log when there is one).
- exit codes: 0 done, 1 done but some inputs failed (e.g. unreadable videos), 2 a user error (one message on stderr),
  130 interrupted; anything else (a traceback) is a bug in msta.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from msta.errors import UsageError, UserError

__all__ = ["LOG_FORMAT", "LOG_DATEFMT", "CliParser", "setup_cli_logging", "run_command", "user_error_message",
           "main_rank", "check_out_dir", "check_out_file", "read_checkpoints"]

LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"   # the same as the training run's train.log
LOG_DATEFMT = "%H:%M:%S"
_OPT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")    # a dotted KEY= at the start of a token
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
_logger = logging.getLogger("msta.cli")


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser with the msta conventions: ``--opts`` (KEY=VALUE tokens only, repeatable), ``--debug``,
    usage errors as exit 2 (argparse's own), and the command's docstring (with its examples) in ``--help``.

    Args:
        prog_doc: the command module's docstring; its first line is the description and the rest the epilog.
        opts: whether the command takes ``--opts``.
    """

    def __init__(self, prog_doc: str, *, opts: bool = True, **kwargs):
        first, _, rest = (prog_doc or "").strip().partition("\n")
        super().__init__(description=first, epilog=rest.strip("\n") or None,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self._takes_opts = opts
        if opts:
            self.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                              help="dotted config overrides, e.g. data.shots=4 train.out_dir=runs/x (KEY=VALUE tokens "
                                   "only: a positional argument after them stays positional; repeatable)")
        self.add_argument("--debug", action="store_true", help="show the traceback of an error")

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if not self._takes_opts:
            return super().parse_known_args(args, namespace)
        rest, opts = _take_opts(args)
        ns, extras = super().parse_known_args(rest, namespace)
        ns.opts = opts
        return ns, extras

    def error(self, message: str):
        if "unrecognized arguments" in message and self._takes_opts:
            message += " (--opts takes KEY=VALUE tokens only, e.g. --opts data.shots=4)"
        super().error(message)


def _take_opts(args: list[str]) -> tuple[list[str], list[str]]:
    """Splits ``--opts K=V K=V`` (and ``--opts=K=V``) out of ``args``; stops at the first non-KEY=VALUE token."""
    rest, opts, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i:])
            break
        if a.startswith("--opts="):
            opts.append(a[len("--opts="):])
        elif a == "--opts":
            while i + 1 < len(args) and _OPT.match(args[i + 1]):
                i += 1
                opts.append(args[i])
        else:
            rest.append(a)
        i += 1
    for o in opts:
        if not _OPT.match(o):
            raise UsageError(f"--opts {o!r} must look like KEY=VALUE with a dotted key, e.g. data.shots=4")
    return rest, opts


def _first_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fails now, before any work, when the output folder ``path`` cannot be created or written.

    Raises:
        UsageError: ``path`` is a file, lies under a file, or its first existing folder is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a folder; give a folder for the results")
    base = _first_existing(path)
    if not base.is_dir():
        raise UsageError(f"{what} {path} cannot be created: {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path} cannot be written: no write permission in {base}")
    return path


def check_out_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Like ``check_out_dir`` for an output file: ``path`` must not be a folder and its folder must be writable."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file name (e.g. {path / 'predictions.json'})")
    check_out_dir(path.parent if str(path.parent) else Path("."), what=f"{what} {path}: its folder")
    return path


def read_checkpoints(paths: Sequence[str]) -> list:
    """``msta.eval.loading.read_checkpoint`` of each path; a file that is not a valid adapters file is a user error
    naming it."""
    from msta.eval.loading import read_checkpoint

    out = []
    for p in paths:
        try:
            out.append(read_checkpoint(p))
        except UserError:
            raise
        except (ValueError, OSError, EOFError) as e:   # an adapters reader's error that is not yet a UserError
            text = str(e)
            raise UserError(text if str(p) in text else f"--ckpt {p}: {text}") from e
    return out


def setup_cli_logging(level: int = logging.INFO) -> None:
    """One log format for every command: msta's own records at ``level``, other libraries' (open_clip logs every model
    build at INFO on the root logger) at WARNING."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, datefmt=LOG_DATEFMT)
    logging.getLogger("msta").setLevel(level)


def main_rank() -> bool:
    """Whether this process prints user-facing messages: rank 0 of a launch (torchrun/deepspeed set RANK), or alone."""
    return os.environ.get("RANK", "0") in ("", "0")


def user_error_message(exc: BaseException) -> Optional[str]:
    """The one-line-or-block message for an error the user caused, or None when ``exc`` is a bug.

    A ``UserError`` anywhere in the chain (``raise ... from``, or the context of an error raised while handling it)
    counts; one re-raised by a DataLoader worker loses the worker's traceback from its message. An ``OSError`` with a
    file name (missing file, permission, a folder under a file, disk full) is reported with the file.
    """
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, UserError):
            return _strip_worker_traceback(e)
        e = e.__cause__ or e.__context__
    if isinstance(exc, OSError) and exc.filename:
        what = exc.strerror or type(exc).__name__
        other = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
        return f"{exc.filename}{other}: {what}"
    if isinstance(exc, _FILE_ERRORS) and exc.errno is None and str(exc):
        return str(exc)   # raised by msta with a message that names the file ("annotation file not found: ...")
    return None


def _strip_worker_traceback(e: BaseException) -> str:
    text = str(e)
    if not _WORKER.match(text):
        return text
    # "Caught X in DataLoader worker process 0.\nOriginal Traceback ...\n  File ...\nmodule.X: <message>"
    hits = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(type(e).__name__)}: ", text, re.M))
    return text[hits[-1].end():] if hits else text


def _log_traceback(exc: BaseException) -> None:
    """Writes the traceback to the msta logger's files (the run's train.log), not to the console."""
    record = _logger.makeRecord(_logger.name, logging.ERROR, __file__, 0, "stopped by an error: %s",
                                (exc,), (type(exc), exc, exc.__traceback__))
    for h in logging.getLogger("msta").handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def run_command(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
                argv: Optional[Sequence[str]] = None) -> int:
    """Parses ``argv`` and runs ``body(args)``, ending every user error as one message and exit code 2.

    On rank 0 (or without a launcher) the message is printed once as ``error: ...``; other ranks print nothing but
    exit 2 as well (with ``--debug`` every rank prints its traceback). Errors that are not the user's keep their
    traceback: they are bugs.
    """
    try:
        args = parser.parse_args(argv)
    except UserError as e:      # a malformed --opts token
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    try:
        return body(args)
    except KeyboardInterrupt:
        if main_rank():
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into the user's mistakes and msta's bugs below
        message = user_error_message(e)
        if message is None:
            raise
        _log_traceback(e)
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        if main_rank():
            print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
