"""Evaluate a checkpoint (or frozen CLIP) under any protocol and write results.json, results.md and plots.

Examples:
    msta-eval --cfg configs/fewshot_hmdb.yaml --ckpt runs/fewshot_hmdb/best
    msta-eval --cfg configs/supervised_k400.yaml --protocol supervised --ckpt runs/sup/best
    msta-eval --cfg CONFIG --protocol b2n --ckpt s1/best s2/best s3/best                  # seeds
    msta-eval --cfg CONFIG --protocol fewshot --ckpt k2/best k4/best k8/best k16/best     # one per K
    msta-eval --gather runs/k2 runs/k4 runs/k8 runs/k16 --out runs/fewshot_table         # records only
    msta-eval --cfg configs/retrieval_msrvtt.yaml --protocol retrieval [--ckpt runs/retrieval_msrvtt/best]
    (python scripts/eval.py ... runs the same from a checkout)

--protocol defaults to the config's eval.protocol. Without --ckpt the frozen CLIP baseline (no adapters) is
evaluated. --out is the output folder (default: next to the checkpoint, <run>/eval_<protocol>/); with several
checkpoints each gets a sub-folder. It is checked before any work. --device picks where to run (default: the GPU
when there is one); under `torchrun --nproc_per_node N` the videos are shared out and one results.json is written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_dir, main_rank, read_checkpoints, run_command, setup_cli_logging
from msta.cli.weights import ensure_pretrained_available
from msta.devices import add_device_argument, select_device
from msta.errors import UsageError

GATHER_OUT = "runs/eval/fewshot_gathered"


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__)
    p.add_argument("--cfg", help="experiment YAML or a shipped config's name (data, prompts, splits, views; its model "
                                 "section builds the model)")
    p.add_argument("--ckpt", nargs="+", default=[], metavar="PATH",
                   help="adapters (run/best, a folder or file): b2n takes one per seed, fewshot one per K")
    p.add_argument("--protocol", choices=("zeroshot", "fewshot", "b2n", "supervised", "retrieval"),
                   help="default: the config's eval.protocol")
    p.add_argument("--out", help="output folder (default: <run>/eval_<protocol>, or runs/eval/<name>_<protocol>)")
    p.add_argument("--gather", nargs="+", metavar="RUN", help="only gather few-shot records (results.json or folders)")
    add_device_argument(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _gather(args: argparse.Namespace) -> int:
    from msta.eval.fewshot import gather_fewshot

    out = check_out_dir(args.out or GATHER_OUT)
    try:
        summary = gather_fewshot(args.gather, out)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    for dataset, row in summary["table"].items():
        print(dataset, "  ".join(f"K={k}: {v:.2f}" for k, v in row.items()))
    return 0


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    if args.gather:
        return _gather(args)
    if not args.cfg:
        raise UsageError("--cfg is required (or --gather)")
    if args.out:
        check_out_dir(args.out)   # before anything is read
    select_device(args.device)   # a wrong --device fails before any work
    from msta.eval.loading import resolve_config
    from msta.eval.runner import default_out_dir, run_protocol

    ckpts = read_checkpoints(args.ckpt)
    cfg = resolve_config(args.cfg, ckpts[0] if ckpts else None, args.opts)
    protocol = args.protocol or cfg.eval.protocol
    if protocol == "zeroshot" and len(ckpts) > 1:
        raise UsageError(f"zero-shot evaluates one checkpoint at a time; got --ckpt {' '.join(args.ckpt)}")
    if not args.out:
        for c in ckpts or [None]:
            check_out_dir(default_out_dir(protocol, c, cfg), what="the default output folder")
    ensure_pretrained_available(cfg.model.name, cfg.model.pretrained)
    from msta.devices import eval_processes

    with eval_processes(args.device) as device:   # under torchrun: each process scores its share, rank 0 writes
        records = run_protocol(cfg, protocol, ckpts, args.out, device=device)
    for r in records if main_rank() else []:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in r.metrics.items() if v is not None)
        print(f"{r.protocol} {r.dataset} [{r.checkpoint or 'frozen CLIP'}; {r.num_frames} frames, "
              f"{r.views['clips']}x{r.views['crops']} views]: {shown}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
