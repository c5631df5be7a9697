"""Backbones: one module per model family that knows its internals (open_clip CLIP, ViCLIP)."""
