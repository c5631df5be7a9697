"""README.md stays true: its config reference is the one generated from msta/config.py, and it gives the two
set-up commands that CI and newcomers run."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_in_readme_is_current():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/config_reference.py")], capture_output=True, text=True,
                         check=True).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- config-reference -->", 1)[1].split("<!-- /config-reference -->", 1)[0].strip()
    assert section == out, "README's config reference is stale: run `python scripts/config_reference.py --write README.md`"


def test_every_config_key_is_documented():
    from msta.config import ExperimentCfg, config_to_dict

    def keys(d, prefix=""):
        for k, v in d.items():
            yield from keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    readme = (ROOT / "README.md").read_text()
    missing = [k for k in keys(config_to_dict(ExperimentCfg())) if k != "name" and f"`{k}`" not in readme]
    assert not missing, f"undocumented config keys: {missing}"


def test_readme_gives_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    ci = (ROOT / ".ci/run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
