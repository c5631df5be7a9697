"""Your own videos: a folder index (``update_index``), text search and classification over it (``VideoIndex``).

Light to import: the model, decoders and safetensors load only when an index is built or queried.
"""
from msta.index.builder import IndexInputError, IndexMismatchError, UpdateReport, scan_folder, update_index
from msta.index.model import IndexModel, load_index_model
from msta.index.store import IndexFileError, read_index
from msta.index.video_index import Hit, IndexModelMismatch, Labelled, VideoIndex, rank

__all__ = ["VideoIndex", "Hit", "Labelled", "rank", "update_index", "scan_folder", "UpdateReport",
           "IndexMismatchError", "IndexInputError", "IndexModelMismatch", "IndexFileError", "IndexModel",
           "load_index_model", "read_index"]
