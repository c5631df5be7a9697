"""msta: multi-modal spatio-temporal adapters for frozen open_clip models on video.

Importing this package imports neither DeepSpeed nor decord; those load lazily where they are used.
"""

__version__ = "0.1.0"
