"""Zero-shot evaluation: a checkpoint (or frozen CLIP without one) on the target datasets, mean ± std over splits.

Usage:
    python scripts/zeroshot_eval.py --cfg configs/zeroshot_k400.yaml --ckpt runs/zeroshot_k400/best.pt
    python scripts/zeroshot_eval.py --cfg CONFIG --out runs/eval/clip_baseline          # frozen CLIP baseline

The targets are the configs listed in the config's eval.targets (each naming a dataset's test splits, class
tables and prompts); a config without targets is itself the target. Every number is written with how it was
obtained (model, weights, checkpoint, frames, views, templates, split files, video pool) to results.json/.md.
"""
from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML (its model section builds the model)")
    p.add_argument("--ckpt", help="adapters file (run/best.pt); omit for the frozen CLIP baseline")
    p.add_argument("--out", help="output folder (default: <run>/eval_zeroshot)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from msta.config import ConfigError
    from msta.eval.loading import read_checkpoint, resolve_config
    from msta.eval.runner import run_zeroshot, zeroshot_targets

    try:
        ckpt = read_checkpoint(args.ckpt) if args.ckpt else None
        cfg = resolve_config(args.cfg, ckpt, args.opts)
        zeroshot_targets(cfg)   # every target config exists and validates before the model is built
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in run_zeroshot(cfg, ckpt, args.out):
        m = r.metrics
        half = f"; half-class {m['half_top1_mean']:.2f} ± {m['half_top1_std']:.2f}" if "half_top1_mean" in m else ""
        print(f"{r.dataset}: top-1 {m['top1_mean']:.2f} ± {m['top1_std']:.2f} over {len(r.split_files)} splits{half} "
              f"[{r.checkpoint or 'frozen CLIP'}; {r.num_frames} frames, {r.views['clips']}x{r.views['crops']} views]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
