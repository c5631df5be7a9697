"""Models: adapters (MSTA, ST-Adapter), their injection into a backbone's blocks, VideoCLIP and build_model.

Backbones (open_clip CLIP ViTs, ViCLIP) live in :mod:`msta.models.backbones`, behind one interface.

Importing this package registers msta's tiny open_clip configs (``msta-tiny``, ``msta-demo``).
"""
from msta.models.adapters import GradScale, MstaLayer, StAdapter, grad_scale
from msta.models.factory import MODEL_CONFIG_DIR, build_model, register_model_configs
from msta.models.video_clip import ParamReport, VideoCLIP, VideoTextOutput

register_model_configs()

__all__ = [
    "build_model", "VideoCLIP", "VideoTextOutput", "ParamReport", "MstaLayer", "StAdapter", "GradScale",
    "grad_scale", "MODEL_CONFIG_DIR", "register_model_configs",
]
