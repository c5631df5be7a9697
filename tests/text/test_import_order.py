"""Number-keyed description files in the class order they were written for (issue 13 item 3).

The MSTA authors' and OST's files are keyed in the order of ViFi-CLIP's label CSV. For HMDB51 that order differs
from the sorted table msta writes in four classes: ViFi-CLIP has kick_ball=20, kick=21, sword_exercise=44,
sword=45; the sorted table has kick=20, kick_ball=21, sword=44, sword_exercise=45. The files below are built in
that convention: keys in ViFi-CLIP's order, temporal texts "A video of <name> generally involves the following
step: <step>, which is a sub-step.", spatial texts "A video about ...".
"""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from msta.text import PromptError, read_prompts_file, read_numbered_descriptions
from msta.text.import_cli import main
from msta.text.importer import find_swaps, import_descriptions
from msta.text.orders import BUILTIN_ORDERS, HMDB51_SORTED, VIFI_HMDB51

ROOT = Path(__file__).resolve().parents[2]
SORTED = sorted(("brush_hair cartwheel catch chew clap climb climb_stairs dive draw_sword dribble drink eat "
                 "fall_floor fencing flic_flac golf handstand hit hug jump kick kick_ball kiss laugh pick pour pullup "
                 "punch push pushup ride_bike ride_horse run shake_hands shoot_ball shoot_bow shoot_gun sit situp "
                 "smile smoke somersault stand swing_baseball sword sword_exercise talk throw turn walk wave").split())
VIFI = list(SORTED)  # the published fact, written here independently of msta.text.orders
VIFI[20], VIFI[21], VIFI[44], VIFI[45] = "kick_ball", "kick", "sword_exercise", "sword"


def _authors_files(tmp_path: Path, order=VIFI) -> tuple[Path, Path]:
    spatial = {str(i): [f"A video about a person in the first scene of key {i}.",
                        f"A video about a person in the second scene of key {i}."] for i in range(len(order))}
    temporal = {str(i): [f"A video of {lb.replace('_', ' ')} generally involves the following step: "
                         f"sub-step {k} of it, which is a sub-step." for k in range(2)] for i, lb in enumerate(order)}
    sp, tp = tmp_path / "2_s_description_hmdb.json", tmp_path / "2_t_description_hmdb.json"
    sp.write_text(json.dumps(spatial))
    tp.write_text(json.dumps(temporal))
    return sp, tp


def _table(path: Path, names) -> Path:
    path.write_text("id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    return path


def test_builtin_orders_are_the_published_facts():
    assert list(VIFI_HMDB51) == VIFI and list(HMDB51_SORTED) == SORTED
    assert VIFI_HMDB51[20:22] == ("kick_ball", "kick") and VIFI_HMDB51[44:46] == ("sword_exercise", "sword")
    assert [i for i, (a, b) in enumerate(zip(HMDB51_SORTED, VIFI_HMDB51)) if a != b] == [20, 21, 44, 45]
    assert BUILTIN_ORDERS["vifi-hmdb51"] == VIFI_HMDB51


@pytest.mark.parametrize("order", ["vifi-hmdb51", "vifi", "label_csv"])
def test_vifi_ordered_files_import_onto_the_sorted_table(tmp_path, order):
    sp, tp = _authors_files(tmp_path)
    ours = _table(tmp_path / "classes.csv", SORTED)
    if order == "label_csv":  # ViFi-CLIP's own `id,name` label CSV, written from the facts
        order = str(_table(tmp_path / "hmdb_51_labels.csv", VIFI))
    classes = import_descriptions(ours, sp, tp, dataset="hmdb51", order=order, out=tmp_path / "hmdb51.yaml")
    assert list(classes) == SORTED  # in the run's table order
    assert classes["kick"]["temporal"][0].startswith("A video of kick generally")
    assert classes["kick_ball"]["temporal"][0].startswith("A video of kick ball generally")
    assert classes["sword"]["spatial"][0].endswith("key 45.") and classes["sword_exercise"]["spatial"][0].endswith(
        "key 44.")
    assert read_prompts_file(tmp_path / "hmdb51.yaml")[1]["kick"]["temporal"] == classes["kick"]["temporal"]


@pytest.mark.parametrize("how", ["order_is_our_table", "old_api_table_only"])
def test_reading_them_in_the_sorted_order_stops_naming_the_swapped_classes(tmp_path, how, caplog):
    sp, tp = _authors_files(tmp_path)
    ours = _table(tmp_path / "classes.csv", SORTED)
    kwargs = {"order": str(ours)} if how == "order_is_our_table" else {}
    with pytest.raises(PromptError) as e:
        import_descriptions(ours, sp, tp, dataset="hmdb51", out=tmp_path / "hmdb51.yaml", **kwargs)
    msg = str(e.value)
    assert "4 class(es) look swapped" in msg and "vifi-hmdb51" in msg and "force" in msg
    assert "key \"20\" -> kick: its descriptions name 'kick ball' and never 'kick'" in msg
    assert "key \"21\" -> kick_ball: its descriptions name 'kick' and never 'kick ball'" in msg
    assert "key \"44\" -> sword:" in msg and "key \"45\" -> sword_exercise:" in msg
    assert not (tmp_path / "hmdb51.yaml").exists()
    with caplog.at_level(logging.WARNING):
        forced = import_descriptions(ours, sp, tp, dataset="hmdb51", force=True, **kwargs)
    assert forced["kick"]["temporal"][0].startswith("A video of kick ball") and "forced" in caplog.text


def test_order_and_table_must_hold_the_same_classes(tmp_path):
    sp, tp = _authors_files(tmp_path)
    small = _table(tmp_path / "base.csv", SORTED[:3])
    with pytest.raises(PromptError, match=r"hold different classes: only in the order \['chew', 'clap'"):
        import_descriptions(small, sp, tp, dataset="hmdb51", order="vifi-hmdb51")
    with pytest.raises(PromptError, match=r"'nope' is neither a built-in order \(vifi-hmdb51, sorted-hmdb51\)"):
        import_descriptions(small, sp, tp, dataset="hmdb51", order="nope")


def _k400_like(tmp_path: Path, joined: str, n: int = 8) -> Path:
    data = {str(i): [f"A video about class {i}, scene {k}." for k in range(n)] for i in range(400)}
    data["174"] = joined
    path = tmp_path / "8_s_description_k400.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("num", [8, None])
def test_the_k400_entry_that_joins_eight_lowercase_sentences_is_split(tmp_path, caplog, num):
    sentences = [f"a video about a person doing step {k} of the action in a room." for k in range(8)]
    path = _k400_like(tmp_path, " ".join(sentences))
    with caplog.at_level(logging.WARNING):
        got = read_numbered_descriptions(path, 400, num)
    assert got[174] == sentences and got[173][0] == "A video about class 173, scene 0."
    assert 'entry "174" holds its 8 descriptions in one string' in caplog.text and path.name in caplog.text


def test_a_joined_entry_that_cannot_be_split_is_reported_with_entry_and_file(tmp_path):
    path = _k400_like(tmp_path, "a video about one thing. a video about another.")
    with pytest.raises(PromptError, match=r"8_s_description_k400.json: 1 bad entries:\n  \"174\": one string of 2 "
                                          r"sentence\(s\), expected 8 descriptions; split it by hand"):
        read_numbered_descriptions(path, 400)


def test_the_swap_check_on_the_shipped_descriptions():
    """Real text: no class of the five shipped prompts files looks swapped in its own order (1325 classes)."""
    for dataset in ("hmdb51", "ucf101", "k400", "k600", "ssv2"):
        _, classes = read_prompts_file(ROOT / "prompts" / f"{dataset}.yaml")
        labels = list(classes)
        texts = [classes[lb]["spatial"] + classes[lb]["temporal"] for lb in labels]
        assert find_swaps(labels, texts, [classes[lb]["name"] for lb in labels]) == [], dataset
    _, classes = read_prompts_file(ROOT / "prompts" / "hmdb51.yaml")  # sorted order, read as if it were ViFi's
    swaps = find_swaps(VIFI, [classes[lb]["spatial"] + classes[lb]["temporal"] for lb in SORTED],
                       [classes[lb]["name"] for lb in VIFI])
    assert {VIFI[i] for i, _ in swaps} <= {"kick", "kick_ball", "sword", "sword_exercise"} and swaps


def test_command_line(tmp_path, caplog):
    sp, tp = _authors_files(tmp_path)
    ours = _table(tmp_path / "classes.csv", SORTED)
    out = tmp_path / "hmdb51.yaml"
    args = ["--classes", str(ours), "--spatial", str(sp), "--temporal", str(tp), "--out", str(out)]
    with caplog.at_level(logging.ERROR):
        assert main(["--order", str(ours), *args]) == 2
    assert "look swapped" in caplog.text and not out.exists()
    assert main(["--order", "vifi", *args]) == 0
    assert read_prompts_file(out)[1]["kick"]["temporal"][0].startswith("A video of kick generally")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_descriptions.py"), "--order", "nope", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'nope' is neither a built-in order" in r.stderr and "Traceback" not in r.stderr
