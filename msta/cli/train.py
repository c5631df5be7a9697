"""Train adapters on a frozen CLIP: `python scripts/train.py --cfg configs/fewshot_hmdb.yaml [--opts k=v ...]`.

Runs as one process without a launcher, and under `torchrun --nproc_per_node N` or `deepspeed --num_gpus N` with
several. `--resume auto` continues from the last complete checkpoint in train.out_dir; `--dry-run` only builds the
model (no weights, no data) and prints its trainable parameters and adapted blocks.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML, e.g. configs/fewshot_hmdb.yaml")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. data.shots=4 train.out_dir=runs/x")
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
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from msta.config import ConfigError, load_config

    try:
        cfg = load_config(args.cfg, args.opts)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from msta.engine.launch import dry_run

        print("\n".join(dry_run(cfg)))
        return 0
    from msta.engine.launch import train

    train(cfg, resume=args.resume, local_rank=args.local_rank, overwrite=args.overwrite,
          allow_config_change=args.allow_config_change)
    return 0


if __name__ == "__main__":
    sys.exit(main())
