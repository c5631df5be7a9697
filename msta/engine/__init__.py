"""Training engine: DeepSpeed set-up, optimiser and schedule, checkpoints, logging and the training loop.

Importing this package does not import DeepSpeed; `msta.engine.deepspeed_setup.import_deepspeed` does, lazily.
Entry points: `msta.engine.launch.train(cfg)` and `msta.engine.launch.dry_run(cfg)`.
"""
from msta.engine.checkpoint import load_adapters
from msta.engine.schedule import WarmupCosine

__all__ = ["load_adapters", "WarmupCosine"]
