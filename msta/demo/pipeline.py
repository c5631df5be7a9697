"""The embedded default: the whole method on generated videos, end to end, on a CPU in minutes.

`run_demo` is what `make demo` (`scripts/demo.py`) runs:

1. writes two synthetic datasets as real mp4 files: a *motion* task (objects moving left, right, up or down: no
   single frame reveals the class) and an *appearance* task (colour + shape, random motion);
2. pretrains a tiny open_clip CLIP on single captioned frames (cached: the second run skips it);
3. evaluates that frozen CLIP zero-shot on both tasks;
4. trains MSTA few-shot on the motion task through `scripts/train.py --cfg configs/demo.yaml` (DeepSpeed, one CPU
   process each), once with the temporal parts and once without them, side by side, with reference distillation
   (`loss.distill`) over captions of the kind the tiny CLIP was pretrained on;
5. evaluates both runs on both tasks (appearance stays zero-shot: it checks that adaptation forgot nothing) and
   writes one table, results.json and plots under `runs/demo/`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

__all__ = ["DemoSettings", "Variant", "VARIANTS", "run_demo", "demo_table"]

_logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Variant:
    """One trained model of the demo: a name, what it shows and its config overrides."""
    name: str
    label: str
    opts: tuple[str, ...] = ()


VARIANTS = (
    Variant("msta", "MSTA + ST-Adapters (temporal)"),
    Variant("msta_no_temporal", "MSTA without temporal parts", ("model.msta.temporal=false",
                                                                "model.st_adapter.enabled=false")),
)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo generates and runs. `quick` is the shortened version that CI runs."""
    out_dir: Path = ROOT / "runs" / "demo"
    config: Path = ROOT / "configs" / "demo.yaml"
    cache_dir: Optional[Path] = None           # tiny CLIP weights; default $MSTA_CACHE_DIR or ~/.cache/msta
    seed: int = 0
    num_frames: int = 4                        # frames per video, = model.num_frames of configs/demo.yaml
    train_per_class: int = 32                  # few-shot: K motion clips per class
    test_per_class: int = 32
    appearance_per_class: int = 8
    pretrain_steps: int = 300                  # tiny CLIP, measured: 99.6 % zero-shot colour + shape in 241 s
    quick: bool = False
    extra_opts: tuple[str, ...] = field(default_factory=tuple)  # applied to every training run

    def scaled(self) -> "DemoSettings":
        """The shortened demo (CI): fewer test videos, the same training. The training schedule stays whole because
        the gap it shows (temporal vs order-free) is what CI asserts; the pretraining stays whole too (a shorter
        cosine schedule ends far lower: 72.5 % at 200 steps) and shares its cache with the full demo."""
        if not self.quick:
            return self
        from dataclasses import replace

        return replace(self, test_per_class=12, appearance_per_class=4)


def _cache_dir(settings: DemoSettings) -> Path:
    if settings.cache_dir is not None:
        return Path(settings.cache_dir)
    from msta.engine.descriptions import cache_root

    return cache_root() / "demo"


def _write_data(settings: DemoSettings) -> dict:
    from msta.data.synthetic import write_synthetic_dataset
    from msta.demo.pretrain import reference_captions

    data_dir, prompts_dir = settings.out_dir / "data", settings.out_dir / "prompts"
    prompts_dir.mkdir(parents=True, exist_ok=True)
    # the prompts folder of a run holds the templates too (text.prompts_dir); the demo uses the shipped ones
    shutil.copyfile(ROOT / "prompts" / "templates.yaml", prompts_dir / "templates.yaml")
    # videos as long as the clip: segment sampling then takes every frame, at a constant step
    motion = write_synthetic_dataset(data_dir / "motion", "motion", seed=settings.seed, prompts_dir=prompts_dir,
                                     num_frames=settings.num_frames,
                                     splits={"train": settings.train_per_class, "test": settings.test_per_class})
    appearance = write_synthetic_dataset(data_dir / "appearance", "appearance", seed=settings.seed,
                                         num_frames=settings.num_frames, prompts_dir=prompts_dir,
                                         splits={"test": settings.appearance_per_class})
    references = data_dir / "reference_texts.txt"  # loss.distill's references: the tiny CLIP's kind of captions
    references.write_text("# captions of the kind the tiny CLIP was pretrained on (msta.demo.pretrain."
                          "reference_captions)\n" + "\n".join(reference_captions()) + "\n")
    return {"motion": motion, "appearance": appearance, "prompts_dir": prompts_dir, "references": references}


def _data_opts(ds, prompts_dir: Path) -> list[str]:
    """Overrides pointing a config at one synthetic dataset."""
    return [f"data.dataset={ds.name}", f"data.root={ds.root}", f"data.class_table={ds.class_table}",
            f"data.test_list={ds.lists['test']}", f"text.prompts_dir={prompts_dir}"]


def _train_command(settings: DemoSettings, variant: Variant, data: dict, weights: Path) -> tuple[list[str], Path]:
    """The `scripts/train.py` command line of one variant, as a user would type it, and its run folder."""
    run_dir = settings.out_dir / "train" / variant.name
    motion = data["motion"]
    opts = [*_data_opts(motion, data["prompts_dir"]), f"data.train_list={motion.lists['train']}",
            f"model.pretrained={weights}", f"train.out_dir={run_dir}", f"loss.distill_texts={data['references']}",
            *variant.opts, *settings.extra_opts]
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--cfg", str(settings.config), "--opts", *opts], run_dir


def _last_step(run_dir: Path) -> int:
    """The last logged training step of a run (0 before the first log line)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if '"split": "train"' in line]
    return max(steps, default=0)


def _train_all(settings: DemoSettings, data: dict, weights: Path) -> dict[str, Path]:
    """Trains every variant with `scripts/train.py`; returns {variant name: run folder}.

    The runs are independent, so they run at the same time, each with an equal share of the cores: the tiny model's
    small matrices gain little from a second thread (measured on 2 cores: 258 s side by side, 280 s one after the
    other). Each run's console output goes to `<run>/console.log`; one bar follows their logged steps.
    """
    from msta.config import load_config
    from tqdm.auto import tqdm

    cfg = load_config(settings.config, list(settings.extra_opts))  # a bad --opts key fails here, before any run
    steps = cfg.optim.epochs * (settings.train_per_class * len(data["motion"].classes) // cfg.train.batch_size)
    if cfg.train.max_steps > 0:
        steps = min(steps, cfg.train.max_steps)
    threads = max(1, (os.cpu_count() or 1) // len(VARIANTS))
    env = dict(os.environ, DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"), OMP_NUM_THREADS=str(threads))
    jobs = {}
    for v in VARIANTS:
        cmd, run_dir = _train_command(settings, v, data, weights)
        run_dir.mkdir(parents=True, exist_ok=True)
        _logger.info("training %s (%d threads, console: %s): %s", v.name, threads, run_dir / "console.log",
                     " ".join(cmd))
        log = open(run_dir / "console.log", "w")
        jobs[v.name] = (subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log, run_dir)
    bar = tqdm(total=steps * len(jobs), desc=f"training {len(jobs)} variants side by side", unit="step")
    try:
        while any(proc.poll() is None for proc, _, _ in jobs.values()):
            time.sleep(2)
            bar.n = sum(min(_last_step(run_dir), steps) for _, _, run_dir in jobs.values())
            bar.refresh()
    finally:
        bar.close()
        for proc, log, _ in jobs.values():
            if proc.poll() is None:  # an interrupt (Ctrl-C) stops the other run too
                proc.terminate()
                proc.wait()
            log.close()
    for name, (proc, _, run_dir) in jobs.items():
        if proc.returncode != 0:
            tail = "".join((run_dir / "console.log").read_text().splitlines(keepends=True)[-30:])
            raise RuntimeError(f"training {name} failed (exit {proc.returncode}); the end of "
                               f"{run_dir / 'console.log'}:\n{tail}")
    return {name: run_dir for name, (_, _, run_dir) in jobs.items()}


def _evaluate(settings: DemoSettings, tag: str, data: dict, weights: Path, ckpt_path: Optional[Path]) -> dict:
    """Top-1 of one model (frozen CLIP when `ckpt_path` is None) on both tasks; writes each task's outputs."""
    from msta.config import load_config
    from msta.eval import protocols as P
    from msta.eval.evaluator import ClassBank
    from msta.eval.loading import build_eval_model, read_checkpoint

    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    scores = {}
    model, bank = None, None
    for task in ("motion", "appearance"):
        cfg = load_config(settings.config, [*_data_opts(data[task], data["prompts_dir"]),
                                            f"model.pretrained={weights}"])
        if model is None:
            # the trained variant's own architecture (e.g. without the temporal parts) comes with its checkpoint
            model = build_eval_model(ckpt.config.model if ckpt is not None else cfg.model, ckpt)
            bank = ClassBank(model)
        record = P.zeroshot(cfg, model, checkpoint=ckpt, out_dir=settings.out_dir / "eval" / tag / task, bank=bank)
        scores[task] = record.metrics["top1_mean"]
    return scores


def demo_table(rows: dict[str, dict], chance: dict[str, float]) -> str:
    """The markdown table the demo prints: one row per model, top-1 (%) on each task."""
    lines = ["| model | motion top-1 (%) | appearance top-1 (%) |", "|---|---|---|",
             f"| chance | {chance['motion']:.1f} | {chance['appearance']:.1f} |"]
    for label, s in rows.items():
        lines.append(f"| {label} | {s['motion']:.1f} | {s['appearance']:.1f} |")
    return "\n".join(lines)


def run_demo(settings: DemoSettings = DemoSettings()) -> dict:
    """Runs the whole demo (see the module docstring) and returns its results (also in results.json).

    Returns:
        {"rows": {model label: {"motion": top1, "appearance": top1}}, "chance": ..., "pretrain": stats,
         "seconds": {step: wall seconds}, "table": markdown}.
    """
    from msta.demo.pretrain import PretrainCfg, ensure_pretrained

    settings = settings.scaled()
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    seconds, t0 = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        seconds[name] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()

    data = _write_data(settings)
    lap("1 generate videos")
    weights, stats = ensure_pretrained(_cache_dir(settings), PretrainCfg(steps=settings.pretrain_steps))
    lap("2 pretrain tiny CLIP (0 when cached)")
    rows = {"frozen CLIP, zero-shot": _evaluate(settings, "frozen", data, weights, None)}
    lap("3 evaluate frozen CLIP")
    runs = _train_all(settings, data, weights)
    lap("4 train " + " + ".join(runs) + " (side by side)")
    for v in VARIANTS:
        rows[v.label] = _evaluate(settings, v.name, data, weights, runs[v.name] / "best.pt")
    lap("5 evaluate them")
    chance = {t: 100.0 / len(data[t].classes) for t in ("motion", "appearance")}
    table = demo_table(rows, chance)
    result = {"rows": rows, "chance": chance, "pretrain": stats, "seconds": seconds, "table": table,
              "settings": {"train_per_class": settings.train_per_class, "test_per_class": settings.test_per_class,
                           "appearance_per_class": settings.appearance_per_class, "quick": settings.quick,
                           "config": str(settings.config), "weights": str(weights)}}
    (settings.out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (settings.out_dir / "results.md").write_text(
        "# msta demo\n\n" + table + "\n\nMotion: MSTA trained few-shot on the motion classes "
        f"({settings.train_per_class} clips per class). Appearance: zero-shot, before and after that adaptation.\n"
        "Per-task details, confusion matrices and per-class plots: `eval/<model>/<task>/`.\n")
    _plot(rows, chance, settings.out_dir / "demo_accuracy.png")
    return result


def _plot(rows: dict[str, dict], chance: dict[str, float], path: Path) -> None:
    """Grouped bars: top-1 per model on each task, with the chance level."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    tasks = ("motion", "appearance")
    width = 0.8 / len(rows)
    for i, (label, s) in enumerate(rows.items()):
        ax.bar([t + i * width for t in range(len(tasks))], [s[k] for k in tasks], width, label=label)
    for t, k in enumerate(tasks):
        ax.hlines(chance[k], t - width / 2, t + width * (len(rows) - 0.5), colors="k", linestyles="dashed")
    ax.set_xticks([t + width * (len(rows) - 1) / 2 for t in range(len(tasks))],
                  [f"{k} (dashed: chance)" for k in tasks])
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
