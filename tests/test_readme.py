"""README.md stays true: its config reference is the one generated from msta/config.py, and it gives the two
set-up commands that CI and newcomers run."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_in_readme_is_current():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/config_reference.py")], capture_output=True, text=True,
                         check=True).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- config-reference -->", 1)[1].split("<!-- /config-reference -->", 1)[0].strip()
    assert section == out, ("README's config reference is stale: run "
                            "`python scripts/config_reference.py --write README.md`")


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


# ------------------------------------------------------------------------------------------------------------------
# README's commands stay runnable: every config it names exists, every script and entry point it names answers --help

_PLACEHOLDER = re.compile(r"^([A-Z_]+|my\.yaml|\.\.\.)$")


def test_every_config_named_in_readme_exists():
    from msta.resources import resolve_config_file

    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"--cfg[ =]([^\s`'\"]+)", readme)) | set(re.findall(r"\bconfigs/[\w./-]+\.ya?ml\b", readme))
    checked = [n for n in named if not _PLACEHOLDER.match(n)]
    assert "configs/fewshot_hmdb.yaml" in checked and "fewshot_hmdb" in checked   # the pattern finds both forms
    missing = [n for n in checked if not (ROOT / n).is_file() and not resolve_config_file(n).is_file()]
    assert not missing, f"README names configs that do not exist: {missing}"


def _help(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"})


@pytest.mark.slow
def test_every_script_named_in_readme_answers_help():
    readme = (ROOT / "README.md").read_text()
    scripts = sorted(set(re.findall(r"\bscripts/(\w+)\.py\b", readme)))
    assert "train" in scripts and "predict" in scripts
    failed = {}
    for name in scripts:
        proc = _help([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"])
        if proc.returncode != 0 or "usage:" not in proc.stdout:
            failed[name] = (proc.returncode, proc.stderr[-500:])
        elif "xample" not in proc.stdout and name != "config_reference":
            failed[name] = "no example in --help"
    assert not failed, failed


@pytest.mark.slow
def test_every_entry_point_named_in_readme_is_declared_and_answers_help():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    declared = dict(line.split(" = ", 1) for line in lines)
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(msta-[a-z-]+)`", readme)) | set(re.findall(r"^(msta-[a-z-]+) ", readme, re.M))
    assert {"msta-train", "msta-predict"} <= named
    assert named <= set(declared), f"README names undeclared entry points: {named - set(declared)}"
    for name in sorted(named):
        module, func = declared[name].split(":")
        code = f"import sys, {module} as m; sys.argv[0] = {name!r}; sys.exit(m.{func}(['--help']))"
        proc = _help([sys.executable, "-c", code])
        assert proc.returncode == 0 and "usage:" in proc.stdout, (name, proc.stderr[-500:])
