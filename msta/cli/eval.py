"""Evaluate a checkpoint (or frozen CLIP) under any protocol and write results.json, results.md and plots.

Usage:
    python scripts/eval.py --cfg configs/fewshot_hmdb.yaml --ckpt runs/fewshot_hmdb/best.pt
    python scripts/eval.py --cfg configs/supervised_k400.yaml --protocol supervised --ckpt runs/sup/best.pt
    python scripts/eval.py --cfg CONFIG --protocol b2n --ckpt s1/best.pt s2/best.pt s3/best.pt   # seeds
    python scripts/eval.py --cfg CONFIG --protocol fewshot --ckpt k2/best.pt k4/best.pt k8/best.pt k16/best.pt
    python scripts/eval.py --gather runs/k2 runs/k4 runs/k8 runs/k16 --out runs/fewshot_table   # records only

--protocol defaults to the config's eval.protocol. Without --ckpt the frozen CLIP baseline (no adapters) is
evaluated. Without --out, results go next to the checkpoint (<run>/eval_<protocol>/).
"""
from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", help="experiment YAML (data, prompts, splits, views; its model section builds the model)")
    p.add_argument("--ckpt", nargs="+", default=[], metavar="PATH",
                   help="adapters file(s): b2n takes one per seed, fewshot one per K (gathered into one table)")
    p.add_argument("--protocol", choices=("zeroshot", "fewshot", "b2n", "supervised"),
                   help="default: the config's eval.protocol")
    p.add_argument("--out", help="output folder")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--gather", nargs="+", metavar="RUN", help="only gather few-shot records (results.json or folders)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from msta.config import ConfigError

    if args.gather:
        from msta.eval.fewshot import gather_fewshot

        try:
            summary = gather_fewshot(args.gather, args.out or "runs/eval/fewshot_gathered")
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for dataset, row in summary["table"].items():
            print(dataset, "  ".join(f"K={k}: {v:.2f}" for k, v in row.items()))
        return 0
    if not args.cfg:
        print("error: --cfg is required (or --gather)", file=sys.stderr)
        return 2
    from msta.eval.loading import read_checkpoint, resolve_config
    from msta.eval.runner import run_protocol

    try:
        ckpts = [read_checkpoint(c) for c in args.ckpt]
        cfg = resolve_config(args.cfg, ckpts[0] if ckpts else None, args.opts)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = run_protocol(cfg, args.protocol or cfg.eval.protocol, ckpts, args.out)
    for r in records:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in r.metrics.items() if v is not None)
        print(f"{r.protocol} {r.dataset} [{r.checkpoint or 'frozen CLIP'}; {r.num_frames} frames, "
              f"{r.views['clips']}x{r.views['crops']} views]: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
