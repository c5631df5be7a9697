"""Prompts: every shipped file validates and fits CLIP's context; loading, fallbacks, errors and rendering."""
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from msta.config import TextCfg
from msta.text import (PromptError, PromptSet, check_lengths, ensemble_embeddings, load_prompts, load_templates,
                       open_clip_token_counter, prompts_from_config, read_prompts_file, render_prompts,
                       validate_template, write_prompts_file)

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
DATASET_FILES = sorted(p for p in PROMPTS.glob("*.yaml") if p.name != "templates.yaml")

HMDB51 = ("brush_hair cartwheel catch chew clap climb climb_stairs dive draw_sword dribble drink eat fall_floor "
          "fencing flic_flac golf handstand hit hug jump kick kick_ball kiss laugh pick pour pullup punch push pushup "
          "ride_bike ride_horse run shake_hands shoot_ball shoot_bow shoot_gun sit situp smile smoke somersault stand "
          "swing_baseball sword sword_exercise talk throw turn walk wave").split()


@pytest.fixture(scope="module")
def counter():
    return open_clip_token_counter()


def test_open_clip_not_imported_by_text_package():
    code = ("import sys, msta.text, msta.text.generator; "
            "assert 'open_clip' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["default", "ensemble", "ssv2"])
def test_shipped_template_sets(name):
    temps = load_templates(PROMPTS, name)
    assert temps and all(t.count("{}") == 1 for t in temps)
    if name == "default":
        assert temps == ["a video of {}."]  # the paper's template
    if name == "ensemble":
        assert 8 <= len(temps) <= 16 and len(set(temps)) == len(temps)


@pytest.mark.parametrize("path", DATASET_FILES, ids=[p.stem for p in DATASET_FILES])
def test_shipped_prompts_file_validates(path, counter):
    """Covers whatever dataset files exist: complete classes, >= 2 descriptions each, style, fits 77 tokens."""
    count, context = counter
    dataset, classes = read_prompts_file(path)
    labels = list(classes)
    sets = ["ensemble"] + ([dataset] if dataset in yaml.safe_load((PROMPTS / "templates.yaml").read_text()) else [])
    for templates in sets:
        ps = load_prompts(PROMPTS, dataset, labels, templates=templates, num_descriptions=2, count_tokens=count,
                          context_length=context)
        assert len(ps.render()) == len(labels) * ps.num_templates
    for label, entry in classes.items():
        assert all(s.lower().startswith("a video") for s in entry["spatial"]), (path, label)
    names = [e["name"] for e in classes.values()]
    assert len(set(names)) == len(names), f"{path}: two classes share a readable name"


def test_hmdb51_covers_the_official_labels():
    _, classes = read_prompts_file(PROMPTS / "hmdb51.yaml")
    assert sorted(classes) == sorted(HMDB51) and len(classes) == 51
    ps = load_prompts(PROMPTS, "hmdb51", HMDB51)
    assert ps.names[0] == "brushing hair"
    assert all(len(s) == 2 for s in ps.spatial) and all(len(t) == 2 for t in ps.temporal)


def _write(tmp_path, classes, templates=None, dataset="toy"):
    (tmp_path / "templates.yaml").write_text(yaml.safe_dump(templates or {
        "default": ["a video of {}."], "ensemble": ["a video of {}.", "a clip of {}."], "other": ["{} happening."]}))
    return write_prompts_file(tmp_path / f"{dataset}.yaml", dataset, classes)


def _entry(name, n=2):
    return {"name": name, "spatial": [f"A video about {name} {i}." for i in range(n)],
            "temporal": [f"A video of {name} generally involves the following step: step {i}, which is a sub-step."
                         for i in range(n)]}


def test_load_render_order_and_ensemble(tmp_path):
    _write(tmp_path, {"b_b": _entry("bee"), "a_a": _entry("ay", n=3)})
    ps = load_prompts(tmp_path, "toy", ["a_a", "b_b"], templates="ensemble")
    assert ps.raw_labels == ["a_a", "b_b"] and ps.names == ["ay", "bee"]
    assert ps.render() == ["a video of ay.", "a clip of ay.", "a video of bee.", "a clip of bee."]
    assert ps.spatial[0] == ["A video about ay 0.", "A video about ay 1."]  # first N of 3
    assert load_prompts(tmp_path, "toy", ["a_a"], templates="ensemble", ensemble=False).templates == ["a video of {}."]
    sub = ps.subset(["b_b"])
    assert sub.names == ["bee"] and sub.temporal == ps.temporal[1:]
    cfg = TextCfg(prompts_dir=str(tmp_path), templates="other", num_descriptions=1)
    assert prompts_from_config(cfg, "toy", ["b_b"]).render() == ["bee happening."]


def test_dataset_template_set_replaces_default(tmp_path):
    _write(tmp_path, {"x": _entry("ex")}, templates={"default": ["a video of {}."], "toy": ["toy {}."]})
    assert load_prompts(tmp_path, "toy", ["x"]).templates == ["toy {}."]


def test_missing_classes_all_listed_with_file(tmp_path):
    path = _write(tmp_path, {"brush_hair": _entry("brushing hair"), "ok": _entry("fine"),
                             "thin": {"name": "thin", "spatial": ["A video about x."], "temporal": []}})
    with pytest.raises(PromptError) as e:
        load_prompts(tmp_path, "toy", ["ok", "brush_hairs", "golf", "thin"])
    msg = str(e.value)
    assert str(path) in msg and "3 of 4" in msg
    assert "brush_hairs: no entry (did you mean 'brush_hair'?)" in msg and "golf: no entry" in msg
    assert "thin: 1 spatial descriptions < 2; 0 temporal descriptions < 2" in msg
    assert "ok:" not in msg


def test_fallback_raw_names_logged(tmp_path, caplog):
    _write(tmp_path, {"ok": _entry("fine")})
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump({"dataset": "toy", "classes": {"ok": _entry("fine"),
                                                                                      "no_name": {"spatial": []}}}))
    with pytest.raises(PromptError, match="text.fallback_raw_names"):
        load_prompts(tmp_path, "toy", ["ok", "no_name"], need_descriptions=False)
    with caplog.at_level(logging.WARNING):
        ps = load_prompts(tmp_path, "toy", ["ok", "no_name", "ride_bike"], fallback_raw_names=True,
                          need_descriptions=False)
    assert ps.names == ["fine", "no name", "ride bike"]
    assert "no_name" in caplog.text and "ride_bike" in caplog.text
    # descriptions cannot fall back: still an error when they are needed
    with pytest.raises(PromptError, match="ride_bike: no entry"):
        load_prompts(tmp_path, "toy", ["ok", "ride_bike"], fallback_raw_names=True)
    # no file at all: names only is fine with the fallback
    ps = load_prompts(tmp_path, "absent", ["a_b"], fallback_raw_names=True, need_descriptions=False)
    assert ps.render() == ["a video of a b."]
    with pytest.raises(PromptError, match="absent.yaml"):
        load_prompts(tmp_path, "absent", ["a_b"])


@pytest.mark.parametrize("bad", ["a video of.", "a video of {} {}.", "a video of {label}.", "a video of {}}.", 3])
def test_templates_need_exactly_one_placeholder(bad, tmp_path):
    with pytest.raises(PromptError, match="placeholder|braces|non-empty string"):
        validate_template(bad, "templates.yaml: x[0]")
    (tmp_path / "templates.yaml").write_text(yaml.safe_dump({"default": ["ok {}.", bad]}))
    with pytest.raises(PromptError, match=r"templates.yaml: default\[1\]"):
        load_templates(tmp_path, "default")


def test_unknown_template_set_suggests(tmp_path):
    _write(tmp_path, {"x": _entry("ex")})
    with pytest.raises(PromptError, match="did you mean 'ensemble'"):
        load_templates(tmp_path, "ensembel")


@pytest.mark.parametrize("body, match", [
    ({"dataset": "toy", "classes": {"x": {"name": "ex", "spatail": []}}}, "classes.x: unknown keys"),
    ({"dataset": "other", "classes": {"x": {"name": "ex"}}}, "must equal the file name"),
    ({"dataset": "toy", "classes": {"x": {"name": "ex", "spatial": "A video about x."}}}, "classes.x.spatial"),
    ({"dataset": "toy", "classes": {}}, "non-empty mapping"),
    ({"dataset": "toy", "labels": {}}, "unknown top-level"),
])
def test_malformed_files_name_file_and_key(tmp_path, body, match):
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(PromptError, match=match) as e:
        read_prompts_file(tmp_path / "toy.yaml")
    assert "toy.yaml" in str(e.value)


def test_too_long_texts_name_class_and_length(tmp_path, counter):
    count, context = counter
    long = "A video about " + "a very long and winding description " * 12 + "."
    _write(tmp_path, {"ok": _entry("fine"), "wordy": {**_entry("wordy"), "spatial": [long, long]}})
    with pytest.raises(PromptError) as e:
        load_prompts(tmp_path, "toy", ["ok", "wordy"], count_tokens=count, context_length=context)
    assert f"{count(long)} tokens" in str(e.value) and "wordy:" in str(e.value) and "77" in str(e.value)
    check_lengths({"ok": ["a video of x."]}, count, context)  # passes
    assert count("a video of x.") == 7  # start + 5 + end


def test_render_and_ensemble_embeddings():
    assert render_prompts(["x", "y"], ["a {}.", "b {}."]) == ["a x.", "b x.", "a y.", "b y."]
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 4, generator=g)
    out = ensemble_embeddings(emb, 3)
    n = emb / emb.norm(dim=-1, keepdim=True)
    ref = torch.stack([n[0:3].mean(0), n[3:6].mean(0)])
    torch.testing.assert_close(out, ref / ref.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(ensemble_embeddings(emb, 1), n)
    with pytest.raises(ValueError, match="multiple"):
        ensemble_embeddings(emb, 4)


def test_prompt_set_is_frozen_and_keyword_built():
    ps = PromptSet(raw_labels=["a_b"], names=["a b"], templates=["x {}.", "y {}."])
    assert ps.render() == ["x a b.", "y a b."] and ps.num_classes == 1 and ps.num_templates == 2
    with pytest.raises(AttributeError):
        ps.names = []


def test_labels_and_texts_starting_with_hash_round_trip_and_a_bom_is_read(tmp_path):
    """Issue 13 item 2 for the prompt readers: YAML's `#` comments never swallow a label or a description."""
    classes = {"#20_rhythm_clap": {"name": "# clapping", "spatial": ["# a crowd (live) & a stage", "it's loud"],
                                   "temporal": ["#1 raising the hands", "bringing them together"]}}
    path = write_prompts_file(tmp_path / "hashes.yaml", "hashes", classes)
    assert read_prompts_file(path)[1] == classes
    (tmp_path / "templates.yaml").write_bytes('\ufeffdefault: ["a video of {}."]\n'.encode("utf-8"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved again by an editor that adds a BOM
    ps = load_prompts(tmp_path, "hashes", ["#20_rhythm_clap"])
    assert ps.names == ["# clapping"] and ps.spatial[0][0] == "# a crowd (live) & a stage"
    assert ps.templates == ["a video of {}."]
