"""Train adapters on a frozen CLIP.

Examples:
    msta-train --cfg fewshot_hmdb                                   # a shipped config by name
    python scripts/train.py --cfg configs/fewshot_hmdb.yaml --opts data.shots=4 train.out_dir=runs/k4
    torchrun --nproc_per_node 2 scripts/train.py --cfg my.yaml      # or: deepspeed --num_gpus 2 scripts/train.py ...
    msta-train --cfg my.yaml --resume auto                          # continue the run in train.out_dir
    msta-train --cfg my.yaml --dry-run                              # build the model only: parameters, blocks

Runs as one process without a launcher, and under `torchrun --nproc_per_node N` or `deepspeed --num_gpus N` with
several. `--resume auto` continues from the last complete checkpoint in train.out_dir; `--dry-run` only builds the
model (no weights, no data) and prints its trainable parameters and adapted blocks. A mistake in the config, the data
or the prompts ends as one message (exit code 2) on rank 0; its traceback is in <out_dir>/train.log (or --debug).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from msta.cli.common import CliParser, run_command, setup_cli_logging


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__)
    p.add_argument("--cfg", required=True, help="experiment YAML, or a shipped config's name (e.g. fewshot_hmdb)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': last complete checkpoint in train.out_dir; or a checkpoints/step_N folder")
    p.add_argument("--dry-run", action="store_true", help="build the model only and print the parameter report")
    p.add_argument("--overwrite", action="store_true",
                   help="a fresh run into a train.out_dir holding an earlier run moves that run aside to\n"
                        "<out_dir>.old-<date-time> (nothing is deleted); without it such a run is refused")
    p.add_argument("--allow-config-change", action="store_true",
                   help="--resume with keys changed that alter training (lr, batch size, epochs, seed, model,\n"
                        "data...): continue with the new values, keep the old config.yaml, log the diff")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()   # until the run's own logging (console + train.log) takes over the msta logger
    from msta.config import load_config

    cfg = load_config(args.cfg, args.opts)
    if args.dry_run:
        from msta.engine.launch import dry_run

        print("\n".join(dry_run(cfg)))
        return 0
    from msta.cli.weights import ensure_pretrained_available
    from msta.engine.launch import train

    ensure_pretrained_available(cfg.model.name, cfg.model.pretrained,   # no network: one message now, not in 65 s
                                offline_when_cached=not cfg.model.init_adapters.startswith("hf-hub:"))
    train(cfg, resume=args.resume, local_rank=args.local_rank, overwrite=args.overwrite,
          allow_config_change=args.allow_config_change)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
