"""Predict the classes of video files: the top-k class names with probabilities, per file.

Examples:
    msta-predict clip.mp4 --labels "juggling,knitting,skiing"             # frozen CLIP ViT-B/16 (OpenAI weights)
    msta-predict videos/ --ckpt runs/fewshot_hmdb/best                    # every video in a folder; the run's classes
    msta-predict a.mp4 b.mp4 --ckpt runs/x/best --labels-file labels.txt --topk 3 --json
    msta-predict clip.mp4 --dataset hmdb51 --pretrained ~/weights/ViT-B-16.bin
    (python scripts/predict.py ... runs the same from a checkout)

Classes: --labels (comma-separated), --labels-file (one per line; commas allowed), --dataset (every class of
prompts/<NAME>.yaml), or, with --ckpt and none of these, the classes the checkpoint was trained on. The model: --cfg
(its model section), else the checkpoint's own config, else frozen CLIP (--model, --pretrained: an open_clip tag or a
local weights file); --opts overrides the config of --cfg or --ckpt. A file that cannot be read gets a message and the
others are still predicted; the exit code is 1 if any file failed, 2 for a mistake in the arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_file, read_checkpoints, run_command, setup_cli_logging
from msta.devices import add_device_argument, select_device
from msta.errors import UsageError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")
DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-16", "openai"   # the DESIGN example: frozen CLIP, no adapters


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(__doc__)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, or folders (every video inside them)")
    names = p.add_mutually_exclusive_group()
    names.add_argument("--labels", help='comma-separated class names, e.g. "juggling,knitting,skiing"')
    names.add_argument("--labels-file", metavar="FILE", help="class names, one per line (UTF-8; commas allowed)")
    names.add_argument("--dataset", help="the classes of prompts/<NAME>.yaml (text.prompts_dir)")
    p.add_argument("--ckpt", metavar="PATH", help="adapters (run/best, a folder or file); its config is used "
                                                  "unless --cfg is given, its classes unless labels are given")
    p.add_argument("--cfg", help="experiment YAML or a shipped config's name (model, frames, views, prompts dir)")
    p.add_argument("--model", help=f"open_clip model name of frozen CLIP without --cfg/--ckpt (default "
                                   f"{DEFAULT_MODEL})")
    p.add_argument("--pretrained", help=f"its weights: an open_clip tag or a local file (default {DEFAULT_PRETRAINED})")
    p.add_argument("--topk", type=int, default=5, help="classes shown per video (default 5)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON instead of text")
    p.add_argument("--out", metavar="FILE", help="also write the predictions as JSON to FILE")
    add_device_argument(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def expand_videos(paths: Sequence[str]) -> list[str]:
    """Each path as given, except a folder: every video file inside it (recursively, sorted).

    Raises:
        UsageError: a folder without any video file.
    """
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES and f.is_file())
            if not found:
                raise UsageError(f"{p} is a folder without video files ({', '.join(VIDEO_SUFFIXES[:5])}, ...); "
                                 "give video files or a folder that holds some")
            out.extend(found)
        else:
            out.append(p)
    return out


def _check_names(names: list[str], source: str) -> list[str]:
    if not names:
        raise UsageError(f"no labels were given ({source} is empty); e.g. --labels \"juggling,knitting,skiing\"")
    seen: dict[str, str] = {}
    for n in names:
        key = " ".join(n.split()).casefold()
        if key in seen:
            raise UsageError(f"duplicate label {n!r} in {source} (same as {seen[key]!r}); give each class once")
        seen[key] = n
    return names


def read_labels_file(path: str) -> list[str]:
    """One class name per line (a UTF-8 BOM, blank lines and surrounding spaces ignored)."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"--labels-file {path} is a folder; give a text file with one class name per line")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"--labels-file {path} not found") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--labels-file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return _check_names([line.strip() for line in text.splitlines() if line.strip()], f"--labels-file {path}")


def _class_names(args, cfg, ckpt) -> list[str]:
    from msta.text.prompts import raw_to_name, read_prompts_file

    if args.labels is not None:
        return _check_names([n.strip() for n in args.labels.split(",") if n.strip()], "--labels")
    if args.labels_file is not None:
        return read_labels_file(args.labels_file)
    if args.dataset is not None:
        if not args.dataset.strip():
            raise UsageError("--dataset is empty; give a dataset name such as hmdb51 (prompts/<NAME>.yaml)")
        _, classes = read_prompts_file(Path(cfg.text.prompts_dir) / f"{args.dataset}.yaml")
        return _check_names([entry["name"] or raw_to_name(raw) for raw, entry in classes.items()],
                            f"{Path(cfg.text.prompts_dir) / args.dataset}.yaml")
    if ckpt is not None and ckpt.class_names:
        return ckpt.class_names
    where = f" ({ckpt.path} was trained on captions, without classes)" if ckpt is not None else ""
    raise UsageError(f"no labels were given{where}: give --labels \"a,b,c\", --labels-file FILE, --dataset NAME, or a "
                     "--ckpt trained on classes")


def _templates(args, cfg, ckpt) -> list[str]:
    from msta.text.prompts import load_templates

    if ckpt is not None and ckpt.templates and not args.cfg:
        return ckpt.templates                      # what the adapters were trained with
    prompts_dir = Path(cfg.text.prompts_dir)
    if (prompts_dir / "templates.yaml").is_file():
        templates = load_templates(prompts_dir, cfg.text.templates, dataset=args.dataset)
        return templates if cfg.text.ensemble else templates[:1]
    return ["a video of {}."]


def _config(args, ckpt):
    import dataclasses

    from msta.config import ExperimentCfg, ModelCfg, resolve_shipped_paths
    from msta.eval.loading import resolve_config

    if args.cfg or ckpt is not None:
        cfg = resolve_config(args.cfg, ckpt, args.opts)
    elif args.opts:
        raise UsageError(f"--opts {' '.join(args.opts)} has no config to override: give --cfg (a YAML or a shipped "
                         "config's name) or --ckpt; for frozen CLIP use --model and --pretrained")
    else:
        cfg = ExperimentCfg(model=ModelCfg(name=DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED))
    if args.model or args.pretrained:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=args.model or cfg.model.name,
                                                                 pretrained=args.pretrained or cfg.model.pretrained))
    return resolve_shipped_paths(cfg)


def _run(args: argparse.Namespace) -> int:
    setup_cli_logging()
    if args.topk <= 0:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    select_device(args.device)   # a wrong --device fails before any work
    if args.out:
        check_out_file(args.out)
    from msta.cli.weights import ensure_pretrained_available
    from msta.eval.loading import build_eval_model
    from msta.eval.predict import predict_files

    videos = expand_videos(args.videos)
    ckpt = read_checkpoints([args.ckpt])[0] if args.ckpt else None
    cfg = _config(args, ckpt)
    names, templates = _class_names(args, cfg, ckpt), _templates(args, cfg, ckpt)
    from_config = (args.cfg or ckpt is not None) and not args.pretrained
    ensure_pretrained_available(cfg.model.name, cfg.model.pretrained,
                                what="model.pretrained" if from_config else "--pretrained")
    from msta.devices import autocast, autocast_dtype

    device = select_device(args.device)
    model = build_eval_model(cfg.model, ckpt, device=device)
    failed, results = 0, []
    precision = autocast(device, autocast_dtype(device, cfg.train.precision))   # fp32 on the CPU
    for pred in predict_files(model, videos, names, templates, topk=args.topk, data=cfg.data,
                              views=cfg.eval.views, num_frames=cfg.model.num_frames, precision=precision):
        results.append({"path": pred.path, "top": [{"label": n, "prob": round(p, 6)} for n, p in pred.top],
                        "error": pred.error})
        if not pred.ok:
            failed += 1
            print(f"{pred.path}: ERROR {pred.error}", file=sys.stderr)
        elif not args.json:
            print(f"{pred.path}:")
            for name, prob in pred.top:
                print(f"  {prob:6.1%}  {name}")
    doc = {"model": cfg.model.name, "pretrained": cfg.model.pretrained, "checkpoint": ckpt.path if ckpt else None,
           "labels": names, "templates": templates, "topk": args.topk, "predictions": results}
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if failed:
        print(f"{failed} of {len(videos)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
