"""The shortened demo end to end (what `make demo` runs, shorter): videos, tiny CLIP pretraining, frozen zero-shot,
two MSTA runs through scripts/train.py, evaluation, table and plots.

It asserts the point of the demo: the pretrained tiny CLIP recognises the appearance classes zero-shot and, being
frame-wise, stays at chance on motion; trained with the temporal parts, MSTA recognises the motion classes, and the
same training without them does not (measured with this schedule: 95.3 % vs 25.0 %, chance 25 %); and adapting to
the motion classes keeps the appearance classes (with reference distillation: 87.5 % after vs 92.7 % before)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # its subprocess has 1500 s; the suite's per-test limit (setup.cfg) is 900 s
def test_quick_demo_shows_the_temporal_gap_without_forgetting(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/demo.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "results.json").read_text())
    rows, chance = result["rows"], result["chance"]
    frozen = rows["frozen CLIP, zero-shot"]
    temporal = rows["MSTA + ST-Adapters (temporal)"]
    flat = rows["MSTA without temporal parts"]
    # a frame-wise CLIP cannot see motion: frozen, it is at chance on the 4 directions
    assert frozen["motion"] < chance["motion"] + 20, rows
    # ... while the appearance classes it was pretrained on are recognised zero-shot
    assert frozen["appearance"] >= 80, rows
    # the temporal parts see the direction of motion; the same adapters without them cannot
    assert temporal["motion"] >= 70, rows
    assert flat["motion"] < chance["motion"] + 20, rows
    assert temporal["motion"] - flat["motion"] >= 30, rows
    # no forgetting: the appearance classes stay recognised zero-shot after adapting to the motion classes
    for row in (temporal, flat):
        assert row["appearance"] >= frozen["appearance"] - 15, rows
    assert "| MSTA + ST-Adapters (temporal) |" in proc.stdout
    assert (out / "demo_accuracy.png").stat().st_size > 2000


def test_a_failed_training_run_is_reported_with_its_console_tail(tmp_path):
    """Both variants train side by side; one that fails stops the demo with the end of its console log."""
    from msta.config import ConfigError
    from msta.demo.pipeline import DemoSettings, _train_all, _write_data

    settings = DemoSettings(out_dir=tmp_path / "demo", train_per_class=4, test_per_class=1, appearance_per_class=1)
    data = _write_data(settings)
    missing = tmp_path / "no_such_weights.pt"
    with pytest.raises(RuntimeError, match=r"training msta failed \(exit [1-9]\d*\)") as failed:
        _train_all(settings, data, missing)
    assert "no_such_weights.pt" in str(failed.value)  # the child's own error, from its console.log
    with pytest.raises(ConfigError, match="unknown config key"):  # a bad override fails before any run starts
        _train_all(DemoSettings(out_dir=settings.out_dir, extra_opts=("train.bogus=1",)), data, missing)
