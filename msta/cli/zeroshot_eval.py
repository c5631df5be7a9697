"""Zero-shot evaluation: a checkpoint (or frozen CLIP without one) on the target datasets, mean ± std over splits.

Examples:
    msta-zeroshot --cfg configs/zeroshot_k400.yaml --ckpt runs/zeroshot_k400/best
    msta-zeroshot --cfg zeroshot_hmdb --out runs/eval/clip_baseline              # frozen CLIP baseline
    msta-zeroshot --cfg zeroshot_k400 --ckpt runs/s1/best runs/s2/best --out runs/eval/zs   # zs/s1, zs/s2
    (python scripts/zeroshot_eval.py ... runs the same from a checkout)

The targets are the configs listed in the config's eval.targets (each naming a dataset's test splits, class
tables and prompts); a config without targets is itself the target. Every number is written with how it was
obtained (model, weights, checkpoint, frames, views, templates, split files, video pool) to results.json/.md in
--out (default <run>/eval_zeroshot), which is checked before any work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_dir, main_rank, read_checkpoints, run_command, setup_cli_logging
from msta.cli.weights import ensure_pretrained_available
from msta.devices import add_device_argument, select_device


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__)
    p.add_argument("--cfg", required=True, help="experiment YAML or a shipped config's name (its model section "
                                                "builds the model)")
    p.add_argument("--ckpt", nargs="+", default=[], metavar="PATH",
                   help="adapters (run/best, a folder or file), one or more; omit for frozen CLIP")
    p.add_argument("--out", help="output folder (default: <run>/eval_zeroshot); with several --ckpt one sub-folder "
                                 "per checkpoint, named after its run")
    add_device_argument(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _out_dirs(out: str, ckpts: list) -> list[Path]:
    """``out`` itself for one checkpoint; ``out/<run name>`` for each of several (``runs/k4/best`` -> ``k4``)."""
    if len(ckpts) == 1:
        return [Path(out)]
    names = []
    for c in ckpts:
        path = Path(c.path)
        name = path.parent.name if path.stem in ("best", "last") else path.stem
        names.append(name if name not in names else f"{name}_{len(names) + 1}")
    return [Path(out) / n for n in names]


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    select_device(args.device)   # a wrong --device fails before any work
    from msta.eval.loading import resolve_config
    from msta.eval.runner import default_out_dir, run_zeroshot, zeroshot_targets

    if args.out:
        check_out_dir(args.out)   # before anything is read
    ckpts = read_checkpoints(args.ckpt) or [None]
    cfg = resolve_config(args.cfg, ckpts[0], args.opts)
    zeroshot_targets(cfg)   # every target config exists and validates before the model is built
    outs = _out_dirs(args.out, ckpts) if args.out else [default_out_dir("zeroshot", c, cfg) for c in ckpts]
    for out in outs:
        check_out_dir(out, what="--out" if args.out else "the default output folder")
    ensure_pretrained_available(cfg.model.name, cfg.model.pretrained)
    from msta.devices import eval_processes

    records = []
    with eval_processes(args.device) as device:   # under torchrun: each process scores its share, rank 0 writes
        for ckpt, out in zip(ckpts, outs):
            records += run_zeroshot(cfg, ckpt, out, device=device)
    for r in records if main_rank() else []:
        m = r.metrics
        if r.protocol == "retrieval":
            t2v, v2t = (m.get(k, m.get(f"{k}_mean")) for k in ("t2v_r1", "v2t_r1"))   # one split, or the mean
            print(f"{r.dataset}: text->video R@1 {t2v:.2f}, video->text R@1 {v2t:.2f} "
                  f"[{r.checkpoint or 'frozen CLIP'}; {r.num_frames} frames, {r.num_videos} videos]")
            continue
        half = f"; half-class {m['half_top1_mean']:.2f} ± {m['half_top1_std']:.2f}" if "half_top1_mean" in m else ""
        print(f"{r.dataset}: top-1 {m['top1_mean']:.2f} ± {m['top1_std']:.2f} over {len(r.split_files)} splits{half} "
              f"[{r.checkpoint or 'frozen CLIP'}; {r.num_frames} frames, {r.views['clips']}x{r.views['crops']} views]")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
