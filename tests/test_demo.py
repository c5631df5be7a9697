"""The shortened demo end to end (what `make demo` runs, with fewer test videos): the temporal part of MSTA is what
recognises motion, and adaptation keeps the appearance classes that frozen CLIP recognises zero-shot."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_shows_the_temporal_gap(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "results.json").read_text())
    rows, chance = result["rows"], result["chance"]
    frozen = rows["frozen CLIP, zero-shot"]
    temporal = rows["MSTA (shared projection + temporal Conv3d)"]
    flat = rows["MSTA without the temporal up-projection"]
    # motion: frozen CLIP and the order-free variant near chance, the temporal variant far above both
    assert frozen["motion"] < chance["motion"] + 20
    assert temporal["motion"] >= flat["motion"] + 30, rows
    assert temporal["motion"] >= 70, rows
    # appearance: recognised zero-shot, and still recognised after adapting to motion
    assert frozen["appearance"] >= 80, rows
    assert temporal["appearance"] >= frozen["appearance"] - 10, rows
    assert "| MSTA (shared projection + temporal Conv3d) |" in proc.stdout
    assert (out / "demo_accuracy.png").stat().st_size > 2000
