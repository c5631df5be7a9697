"""The ViCLIP rows of the benchmark (group ``viclip``): one run measures, on the same workload (8 x 224, micro-batch 2,
MSTA r=128 in blocks 8-12 of both towers, L_CE + L_CC over 51 classes),

* the ViCLIP-B/16 step with every ``model.perf`` switch on,
* the same with every switch off,
* the frame-wise CLIP ViT-B/16 step with every switch on,

so that the speed-up of the switches on the joint-attention backbone and its FLOPs and time against the frame-wise
step are ratios of one invocation (the shared machines are too noisy to compare across runs). ViCLIP's vision tower
attends over one sequence of ``1 + T * HW`` = 1,569 tokens at 8 x 224, CLIP's over T sequences of ``1 + HW`` = 197
tokens: the attention products grow by ``1569**2 / (8 * 197**2)`` = 7.9x, the linear layers stay (1,569 vs 1,576
rows); ``attention_ratio`` is that analytic figure, ``flops_vs_framewise`` the measured one of the whole step.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from msta.bench.peaks import TINY_SHAPES
from msta.bench.train_step import TrainSpec

__all__ = ["viclip_specs", "is_viclip_row", "viclip_summary", "viclip_table"]

_FRAMEWISE = "frame-wise "
_OFF = {"frozen_prefix_no_grad": False, "cache_text": False, "cut_text": False, "cache_descriptions": False}


def viclip_specs(tiny: bool = False, steps: Optional[int] = None) -> list[TrainSpec]:
    """[ViCLIP all on, ViCLIP all off, frame-wise CLIP all on] (tiny: viclip-tiny and msta-tiny, r=16 in block 2)."""
    if tiny:
        base = TrainSpec(name="viclip-tiny msta_r16_b2-2", model="viclip-tiny", msta_dim=16, msta_blocks=(2, 2),
                         steps=steps or 1, warmup=1, local_peak_shape=TINY_SHAPES[0])
        framewise = replace(base, name=_FRAMEWISE + "msta-tiny msta_r16_b2-2", model="msta-tiny")
    else:
        # the MLP product of the joint sequence (1,569 rows) for the peak beside the steps
        base = TrainSpec(name="viclip-b16 msta_r128_b8-12", model="viclip-b16", steps=steps or 2, warmup=1,
                         local_peak_shape=(1569, 3072, 768))
        framewise = replace(base, name=_FRAMEWISE + "ViT-B-16 msta_r128_b8-12", model="ViT-B-16",
                            local_peak_shape=(1576, 3072, 768))
    return [base, replace(base, name=base.name + ":all_off", **_OFF), framewise]


def is_viclip_row(row: dict) -> bool:
    """A row of this group (its names are not those of the ``train`` group)."""
    return row.get("name", "").startswith(("viclip", _FRAMEWISE))


# (patch, default image size) of the models these rows use
_GEOMETRY = {"viclip-b16": (16, 224), "ViT-B-16": (16, 224), "viclip-tiny": (8, 32), "msta-tiny": (8, 32)}


def _tokens(row: dict) -> tuple[int, int]:
    """(tokens per attention sequence, sequences per clip) of the row's vision tower."""
    patch, size = _GEOMETRY[row["model"]]
    hw = ((row.get("image_size") or size) // patch) ** 2
    if row["model"].startswith("viclip"):
        return 1 + row["num_frames"] * hw, 1
    return 1 + hw, row["num_frames"]


def viclip_summary(rows: list[dict]) -> dict:
    """The ratios of the three rows (those present): switches on vs off on ViCLIP, ViCLIP vs frame-wise."""
    viclip = [r for r in rows if not r["name"].startswith(_FRAMEWISE)]
    on = next((r for r in viclip if r["all_on"]), None)
    off = next((r for r in viclip if not r["all_on"]), None)
    fw = next((r for r in rows if r["name"].startswith(_FRAMEWISE)), None)
    out: dict = {"rows": rows}
    if on and off and on["step_s"] > 0:
        out["speedup_all_on_vs_off"] = off["step_s"] / on["step_s"]
        out["step_peak_share_on_vs_off"] = (on["step_peak_mb"] / off["step_peak_mb"]
                                            if off.get("step_peak_mb") else float("nan"))
    if on and fw:
        out["flops_vs_framewise"] = on["flops"] / fw["flops"]
        out["time_vs_framewise"] = on["step_s"] / fw["step_s"] if fw["step_s"] > 0 else float("nan")
        try:
            (lv, nv), (lf, nf) = _tokens(on), _tokens(fw)
            out.update(tokens_joint=lv, tokens_framewise=lf, sequences_framewise=nf,
                       attention_ratio=(nv * lv ** 2) / (nf * lf ** 2))
        except KeyError:  # a model without a known geometry
            pass
    return out


def viclip_table(summary: dict) -> str:
    """Markdown: the three rows, then the ratios."""
    def f(x, fmt="{:.2f}"):
        return "-" if x is None or x != x else fmt.format(x)

    lines = ["| config | s/step | step peak MB | GFLOP exec (fwd + bwd) | fwd GFLOP | trainable | local peak GFLOP/s |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        peaks = sorted(r.get("local_peaks") or [0.0])
        lines.append(f"| {r['name']} ({r['precision']}) | {f(r['step_s'])} | {f(r.get('step_peak_mb'), '{:.0f}')} | "
                     f"{f(r['flops'] / 1e9, '{:.1f}')} | {f(r['fwd_flops'] / 1e9, '{:.1f}')} | {r['trainable']:,} | "
                     f"{f(peaks[len(peaks) // 2] / 1e9, '{:.1f}')} |")
    ratios = [("ViCLIP: all on vs all off, time (x faster)", summary.get("speedup_all_on_vs_off")),
              ("ViCLIP: step peak memory, all on / all off", summary.get("step_peak_share_on_vs_off")),
              ("ViCLIP / frame-wise CLIP, FLOPs per step", summary.get("flops_vs_framewise")),
              ("ViCLIP / frame-wise CLIP, time per step", summary.get("time_vs_framewise")),
              ("attention products, joint / frame-wise (analytic)", summary.get("attention_ratio"))]
    body = [f"| {k} | {f(v)} |" for k, v in ratios if v is not None]
    if "tokens_joint" in summary:
        body.append(f"| tokens per attention | {summary['tokens_joint']:,} (one sequence) vs "
                    f"{summary['tokens_framewise']} x {summary['sequences_framewise']} sequences |")
    return "\n".join(lines) + "\n\n| ratio | value |\n|---|---|\n" + "\n".join(body)
