"""Predict the classes of video files: the top-k class names with probabilities, per file.

Usage:
    python scripts/predict.py clip.mp4 --labels "juggling,knitting,skiing"            # frozen CLIP ViT-B/16
    python scripts/predict.py a.mp4 b.mp4 --dataset hmdb51 --ckpt runs/fewshot_hmdb/best.pt --topk 3

--labels gives readable class names; --dataset takes every class of prompts/<NAME>.yaml. With --ckpt the model
config comes from the checkpoint unless --cfg is given. A file that cannot be read gets a message and the others
are still predicted; the exit code is 1 if any file failed.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("--labels", help='comma-separated class names, e.g. "juggling,knitting,skiing"')
    names.add_argument("--dataset", help="take the classes of prompts/<NAME>.yaml (text.prompts_dir)")
    p.add_argument("--ckpt", help="adapters file; its embedded config is used unless --cfg is given")
    p.add_argument("--cfg", help="experiment YAML (model, frames, views, prompts dir)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides")
    return p.parse_args(argv)


def _classes_and_templates(args, cfg, ckpt) -> tuple[list[str], list[str]]:
    from msta.text.prompts import load_templates, raw_to_name, read_prompts_file

    prompts_dir = Path(cfg.text.prompts_dir)
    if args.labels:
        names = [n.strip() for n in args.labels.split(",") if n.strip()]
    else:
        _, classes = read_prompts_file(prompts_dir / f"{args.dataset}.yaml")
        names = [entry["name"] or raw_to_name(raw) for raw, entry in classes.items()]
    if (prompts_dir / "templates.yaml").is_file():
        templates = load_templates(prompts_dir, cfg.text.templates, dataset=args.dataset)
        templates = templates if cfg.text.ensemble else templates[:1]
    elif ckpt is not None and ckpt.templates:
        templates = ckpt.templates
    else:
        templates = ["a video of {}."]
    return names, templates


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from msta.config import ConfigError, ExperimentCfg, ModelCfg
    from msta.eval.loading import build_eval_model, read_checkpoint, resolve_config
    from msta.eval.predict import predict_files
    from msta.text.prompts import PromptError

    try:
        ckpt = read_checkpoint(args.ckpt) if args.ckpt else None
        if args.cfg or ckpt is not None:
            cfg = resolve_config(args.cfg, ckpt, args.opts)
        else:  # the DESIGN example: frozen CLIP ViT-B/16 with OpenAI weights, no adapters
            cfg = ExperimentCfg(model=ModelCfg(name="ViT-B-16", pretrained="openai"))
        names, templates = _classes_and_templates(args, cfg, ckpt)
    except (ConfigError, PromptError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not names:
        print("error: no class names given", file=sys.stderr)
        return 2
    model = build_eval_model(cfg.model, ckpt)
    failed = 0
    for pred in predict_files(model, args.videos, names, templates, topk=args.topk, data=cfg.data,
                              views=cfg.eval.views, num_frames=cfg.model.num_frames):
        if not pred.ok:
            failed += 1
            print(f"{pred.path}: ERROR {pred.error}", file=sys.stderr)
            continue
        print(f"{pred.path}:")
        for name, prob in pred.top:
            print(f"  {prob:6.1%}  {name}")
    if failed:
        print(f"{failed} of {len(args.videos)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
