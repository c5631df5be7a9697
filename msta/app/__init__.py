"""The optional local web page (``pip install 'msta[app]'``, then ``msta app``): classify a video, search an index.

Gradio is imported here only, inside functions, so that ``import msta`` and every other command work without the
extra installed. The page binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["require_gradio", "build_app", "launch"]

_MISSING = ("the web page needs the optional extra: pip install 'msta[app]' (or pip install gradio), "
            "then run `msta app` again")


def require_gradio():
    """Imports gradio, or raises a ``UsageError`` that says how to install it."""
    import os

    from msta.errors import UsageError

    # a local page for local videos: no usage reports to Gradio's servers unless the user asks for them
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise UsageError(_MISSING) from e
    return gradio


def build_app(checkpoints: Sequence[str] = (), cfg: Optional[str] = None, indexes: Sequence[str] = (),
              device: Optional[str] = None):
    """The page (a Gradio ``Blocks``), not launched; see ``msta.app.backend.Backend`` for the arguments."""
    require_gradio()
    from msta.app.backend import Backend
    from msta.app.ui import build_page

    return build_page(Backend(checkpoints, cfg, indexes, device))


def launch(page, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serves ``page`` on ``host:port`` (local only by default; nothing is shared through Gradio's relay).

    Returns:
        The page, serving in a background thread when ``block`` is False (``page.close()`` stops it).
    """
    page.queue(default_concurrency_limit=1)   # one model call at a time: the model is not re-entrant
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                show_error=True, quiet=True)
    return page
