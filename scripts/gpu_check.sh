#!/usr/bin/env bash
# GPU check (issue 16.9): ViT-B/16 (random init: the device machine has no network) trains a few steps in bf16 with
# DeepSpeed ZeRO-2 on CUDA through torchrun, then evaluates and predicts on the GPU. Prints s/step, clips/s and the
# peak GPU memory (nvidia-smi, sampled every 0.2 s) and writes them to $OUT/gpu_check.json (default runs/gpu_check).
#
#   bash scripts/gpu_check.sh [STEPS]          # after `make install`; STEPS defaults to 20
#
# Expects: one CUDA GPU, the project installed in .venv (or PY=... pointing to a python that has it).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-20}
OUT=${OUT:-runs/gpu_check}
PY=${PY:-.venv/bin/python}
# a CPU rehearsal of this script: MODEL=msta-tiny SIZE=32 BLOCKS=1,2 DIM=32 DEVICE=cpu bash scripts/gpu_check.sh 4
MODEL=${MODEL:-ViT-B-16} SIZE=${SIZE:-224} BLOCKS=${BLOCKS:--5,-1} DIM=${DIM:-128} DEVICE=${DEVICE:-cuda}
export MODEL SIZE BLOCKS DIM
unset DS_ACCELERATOR                     # let DeepSpeed pick CUDA
mkdir -p "$OUT"
rm -rf "$OUT/run" "$OUT/eval" "$OUT/data" "$OUT/prompts" "$OUT/nvidia_smi_used_mib.txt"

"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path
import shutil
import yaml
from msta.data.synthetic import write_synthetic_dataset

out = Path(sys.argv[1])
import os
size = int(os.environ["SIZE"])
blocks = [int(b) for b in os.environ["BLOCKS"].split(",")]
(out / "prompts").mkdir(parents=True)
shutil.copy("prompts/templates.yaml", out / "prompts" / "templates.yaml")
data = write_synthetic_dataset(out / "data", "appearance", splits={"train": 16, "test": 4}, size=size, num_frames=16,
                               progress=False, prompts_dir=out / "prompts")
cfg = {
    "_base_": [str(Path("configs/_base_/default.yaml").resolve())],
    "name": "gpu_check",
    "model": {"name": os.environ["MODEL"], "pretrained": None, "num_frames": 8,
              "msta": {"text_blocks": blocks, "vision_blocks": blocks, "dim": int(os.environ["DIM"])}},
    "data": {"dataset": data.name, "root": str(data.root), "class_table": str(data.class_table),
             "train_list": str(data.lists["train"]), "test_list": str(data.lists["test"]), "input_size": size,
             "val_fraction": 0.0, "select_on": "test", "num_workers": 4},
    "text": {"prompts_dir": str(data.prompts.parent)},
    "train": {"out_dir": str(out / "run"), "batch_size": 16, "micro_batch": 16, "zero_stage": 2,
              "precision": "bf16", "log_every": 1, "eval_every": 0, "ckpt_every": 1},
    "eval": {"batch_size": 16, "views": {"clips": 1, "crops": 1}},
}
(out / "gpu_check.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
EOF

peak_file="$OUT/nvidia_smi_used_mib.txt"
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$peak_file" 2>/dev/null || true
  sleep 0.2; done ) &
poller=$!
trap 'kill $poller 2>/dev/null || true' EXIT

t0=$(date +%s)
"$PY" -m torch.distributed.run --nproc_per_node=1 --master_addr=127.0.0.1 --master_port=29531 scripts/train.py \
  --cfg "$OUT/gpu_check.yaml" --opts "train.max_steps=$STEPS"
t1=$(date +%s)
"$PY" scripts/eval.py --cfg "$OUT/gpu_check.yaml" --ckpt "$OUT/run/best" --protocol supervised --out "$OUT/eval" \
  --device "$DEVICE"
t2=$(date +%s)
video=$(find "$OUT/data/videos" -name '*.mp4' | head -1)
"$PY" scripts/predict.py "$video" --ckpt "$OUT/run/best" --device "$DEVICE" --json > "$OUT/predict.json"
t3=$(date +%s)

"$PY" - "$OUT" "$t0" "$t1" "$t2" "$t3" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

out, t0, t1, t2, t3 = Path(sys.argv[1]), *map(int, sys.argv[2:])
rows = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()]
train = [r for r in rows if r.get("split") == "train"]
steady = train[2:] or train                      # the first steps include warm-up (kernels, allocator)
used = [int(x) for x in (out / "nvidia_smi_used_mib.txt").read_text().split() if x.strip().isdigit()]
result = {
    "steps": len(train),
    "clips_per_s": statistics.median(r["clips_per_s"] for r in steady),
    "s_per_step": statistics.median(16 / r["clips_per_s"] for r in steady),
    "peak_gpu_memory_mib_nvidia_smi": max(used) if used else None,
    "train_wall_s": t1 - t0, "eval_wall_s": t2 - t1, "predict_wall_s": t3 - t2,
    "eval_top1": json.loads((out / "eval" / "results.json").read_text()).get("metrics"),
}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
EOF
