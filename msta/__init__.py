"""msta: multi-modal spatio-temporal adapters for frozen open_clip models on video.

The Python API (``msta.api``)::

    import msta
    model = msta.load("runs/fewshot_hmdb/best")          # or msta.load("ViT-B-16", pretrained="openai")
    model.predict(["clip.mp4"], topk=3)

Importing this package imports neither torch, DeepSpeed nor decord; ``msta.load`` and the modules load them where
they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load", "VideoModel", "VideoIndex"]


def __getattr__(name: str):
    # PEP 562: `msta.load` imports the API (and torch) on first use only
    if name in ("load", "VideoModel"):
        from msta import api

        return getattr(api, name)
    if name == "VideoIndex":   # the folder index of your own videos (msta.index)
        from msta.index import VideoIndex

        return VideoIndex
    raise AttributeError(f"module 'msta' has no attribute {name!r}")
