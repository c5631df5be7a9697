"""Before a command builds a model from an open_clip pretrained tag: are the weights cached, and if not, can they
be downloaded? Answered in at most a few seconds, so that a machine without network gets one message with the fix
at once instead of huggingface_hub's retries (65 s, then a traceback).

open_clip (with huggingface_hub installed, as it always is with msta) takes a tag's weights from the Hugging Face
Hub (``hf_hub`` of ``open_clip.get_pretrained_cfg``, a ``.safetensors`` alternative first), else from its URL into
``~/.cache/clip``. When the file is cached, this module switches huggingface_hub to offline mode for the process,
so the cached file is used without asking the Hub for a newer revision.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from msta.errors import UserError

__all__ = ["WeightsNotAvailable", "cached_weights", "ensure_pretrained_available"]

_logger = logging.getLogger(__name__)
_TRUE = ("1", "on", "yes", "true")


class WeightsNotAvailable(UserError):
    """An open_clip tag's weights are neither cached nor downloadable from here."""


def _candidates(cfg: dict) -> tuple[Optional[str], list[str]]:
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    hub = cfg.get("hf_hub", "")
    if not hub:
        return None, []
    repo, filename = os.path.split(hub)    # "org/name/" (default file name) or "org/name/file.bin", as open_clip
    filename = filename or HF_WEIGHTS_NAME
    return repo, [*_get_safe_alternatives(filename), filename]


def cached_weights(name: str, tag: str) -> tuple[Optional[str], str]:
    """The cached weights file of ``name``/``tag`` (None when not cached) and where it was looked for (for messages).
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if "file" in cfg:
        return cfg["file"], cfg["file"]
    repo, files = _candidates(cfg)
    if repo:
        from huggingface_hub import constants, try_to_load_from_cache

        for f in files:
            hit = try_to_load_from_cache(repo, f)
            if isinstance(hit, str) and Path(hit).is_file():
                return hit, f"{repo} in the Hugging Face cache {constants.HF_HUB_CACHE}"
        return None, f"{repo} ({' or '.join(files)}) in the Hugging Face cache {constants.HF_HUB_CACHE}"
    url = cfg.get("url", "")
    target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return (str(target) if target.is_file() else None), str(target)


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                                  "MSTA_OFFLINE"))


def _reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (DNS included)."""
    u = urlparse(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme != "http" else 80)
    ok = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)   # a thread: getaddrinfo itself has no timeout
    t.start()
    t.join(timeout)
    return bool(ok)


def _go_offline() -> None:
    """Makes huggingface_hub use its cache without network calls, in this process (imported or not yet)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - open_clip then downloads by URL only
        pass


def ensure_pretrained_available(name: str, pretrained: Optional[str], *, what: str = "model.pretrained",
                                timeout: float = 3.0, offline_when_cached: bool = True) -> None:
    """Returns at once when ``pretrained`` needs no download (None, a local file, cached weights) or can be
    downloaded; raises when it cannot, with the fix.

    Args:
        name: open_clip model name (``model.name``).
        pretrained: ``model.pretrained``: None, a local file, or an open_clip tag.
        what: how the user set it, named in the message (``model.pretrained``, ``--pretrained``).
        timeout: seconds to wait for the download host.
        offline_when_cached: switch huggingface_hub to offline mode when the weights are cached (False when the
            process still needs the Hub, e.g. for adapters given as ``hf-hub:`` ids that are read later).

    Raises:
        WeightsNotAvailable: a tag whose weights are not cached, with no network (or offline mode set).
    """
    if not pretrained or Path(pretrained).expanduser().is_file():
        return
    import open_clip

    if not open_clip.get_pretrained_cfg(name, pretrained):
        return  # not a tag of this model: the model factory says so with the list of tags
    hit, where = cached_weights(name, pretrained)
    if hit is not None:
        _logger.debug("weights of %s/%s cached: %s", name, pretrained, hit)
        if offline_when_cached:
            _go_offline()
        return
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if cfg.get("hf_hub"):
        from huggingface_hub import constants
        host = constants.ENDPOINT
    else:
        host = cfg.get("url", "")
    offline = _offline()
    if not offline and _reachable(host, timeout):
        _logger.info("weights of %s (tag %r) are not cached; downloading them from %s", name, pretrained, host)
        return
    why = "offline mode is set (HF_HUB_OFFLINE)" if offline else f"{urlparse(host).hostname} cannot be reached"
    raise WeightsNotAvailable(
        f"the weights of {name} for pretrained tag {pretrained!r} ({what}) are not cached here (looked for {where}) "
        f"and {why}. Either download them once where there is network: python -c \"import open_clip; "
        f"open_clip.create_model('{name}', pretrained='{pretrained}')\" and copy the cache folder here (or set "
        f"HF_HOME to it); or give a local weights file: {what}=/path/to/open_clip_pytorch_model.bin")
