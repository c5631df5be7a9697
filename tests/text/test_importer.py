"""Importer for number-keyed description files: round trip, ordering by the class table, errors."""
import json

import pytest

from msta.text import (PromptError, export_numbered_descriptions, import_descriptions, load_prompts,
                       read_class_table, read_numbered_descriptions, write_prompts_file)

LABELS = ["brush_hair", "cartwheel", "catch"]


def _spatial(i, n=2):
    return [f"A video about class {i}, view {k}." for k in range(n)]


def _temporal(i, n=2):
    return [f"A video of class {i} generally involves the following step: step {k}, which is a sub-step."
            for k in range(n)]


@pytest.fixture
def published(tmp_path):
    table = tmp_path / "hmdb_labels.csv"
    table.write_text("id,name\n" + "".join(f"{i},{lb}\n" for i, lb in enumerate(LABELS)))
    s = {str(i): _spatial(i) for i in range(len(LABELS))}
    t = {str(i): _temporal(i) for i in range(len(LABELS))}
    (tmp_path / "2_s_description_hmdb.json").write_text(json.dumps(s))
    (tmp_path / "2_t_description_hmdb.json").write_text(json.dumps(t))
    return table, tmp_path / "2_s_description_hmdb.json", tmp_path / "2_t_description_hmdb.json", s, t


def test_round_trip(tmp_path, published):
    table, sp, tp, s, t = published
    (tmp_path / "templates.yaml").write_text('default: ["a video of {}."]\n')
    names = tmp_path / "names" / "hmdb51.yaml"
    write_prompts_file(names, "hmdb51", {"brush_hair": {"name": "brushing hair"}})
    out = tmp_path / "hmdb51.yaml"
    classes = import_descriptions(table, sp, tp, dataset="hmdb51", out=out, names_from=names, num_descriptions=2)
    assert list(classes) == LABELS
    assert classes["brush_hair"]["name"] == "brushing hair" and classes["catch"]["name"] == "catch"
    ps = load_prompts(tmp_path, "hmdb51", LABELS[::-1])  # keyed by raw label: any table order works
    assert ps.spatial[0] == s["2"] and ps.temporal[2] == t["0"]
    s2, t2 = export_numbered_descriptions(classes, table)
    assert s2 == s and t2 == t
    # and through the written file
    from msta.text import read_prompts_file
    assert export_numbered_descriptions(read_prompts_file(out)[1], table) == (s, t)


def test_joined_sentences_are_split(tmp_path, published, caplog):
    table, sp, tp, s, _ = published
    s["1"] = [" ".join(s["1"])]
    sp.write_text(json.dumps(s))
    assert read_numbered_descriptions(sp, 3, 2)[1] == _spatial(1)
    assert "one string" in caplog.text


@pytest.mark.parametrize("data, match", [
    ({"0": ["a", "b"], "1": ["a", "b"]}, r"missing \['2'\]"),
    ({"0": ["a", "b"], "1": ["a", "b"], "2": ["a", "b"], "3": ["a", "b"]}, r"unexpected \['3'\]"),
    ({"0": ["a", "b"], "1": ["a"], "2": [1, "b"]}, r"\"1\": one string of 1 sentence\(s\), expected 2"),
    ({"0": ["a", "b"], "1": ["a", "b", "c"], "2": ["a", "b"]}, r"\"1\": 3 strings, expected 2"),
    ([["a", "b"]], "expected an object"),
])
def test_bad_description_files(tmp_path, data, match):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PromptError, match=match) as e:
        read_numbered_descriptions(path, 3, 2)
    assert "d.json" in str(e.value)
