"""The description generator end to end against a real HTTP server on loopback that answers like a chat endpoint."""
import importlib.util
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from msta.text import load_prompts, read_prompts_file
from msta.text.generator import (PROMPT_VERSION, GenerationError, GeneratorOptions, MalformedAnswer,
                                 generate_prompts_file, parse_answer)

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["brush_hair", "cartwheel", "catch", "chew", "clap"]
KEY = "sk-test-secret-123"


class FakeLLM:
    """Scripted endpoint: `faults` apply to the next requests in order; after `fail_after` good answers it is down."""

    def __init__(self):
        self.faults: list[str] = []
        self.fail_after = None
        self.answered = 0
        self.requests: list[str] = []        # raw label of every request
        self.auth: list[str] = []
        self.lock = threading.Lock()

    def respond(self, handler):
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        label = re.search(r"dataset label: ([^,)]+)", user).group(1)
        with self.lock:
            self.requests.append(label)
            self.auth.append(handler.headers.get("Authorization", ""))
            fault = self.faults.pop(0) if self.faults else None
            down = self.fail_after is not None and self.answered >= self.fail_after
        if down or fault in ("500", "401"):
            return handler.send_error(int(fault or 500))
        if fault == "429":
            handler.send_response(429)
            handler.send_header("Retry-After", "0")
            handler.end_headers()
            return
        if fault == "slow":
            time.sleep(0.6)  # longer than the client's timeout
        content = json.dumps({"spatial": [f"A video about {label} scene {k}." for k in range(2)],
                              "temporal": [f"step {k} of {label}" for k in range(2)]})
        if fault == "fenced":
            content = f"```json\n{content}\n```"
        if fault == "malformed":
            content = "Sure! Here are some descriptions: ..."
        if fault == "short":
            content = json.dumps({"spatial": ["A video about one."], "temporal": ["a", "b"]})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        if fault == "garbage":
            payload = b"<html>proxy error</html>"
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        try:
            handler.wfile.write(payload)
        except OSError:  # the client gave up (timeout test)
            return
        if fault not in ("malformed", "short", "garbage"):
            with self.lock:
                self.answered += 1


@pytest.fixture
def llm():
    fake = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            assert self.path == "/v1/chat/completions"
            fake.respond(self)

        def log_message(self, *args):  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("id,name\n" + "".join(f"{i},{lb}\n" for i, lb in enumerate(LABELS)))
    (tmp_path / "templates.yaml").write_text('default: ["a video of {}."]\n')
    return path


def _opts(llm, **kw):
    return GeneratorOptions(**{"base_url": llm.base_url, "model": "fake-1", "api_key_env": "", "timeout": 0.3,
                               "max_retries": 6, "backoff": 0.001, **kw})


def test_script_end_to_end_with_faults(llm, table, tmp_path, monkeypatch, caplog):
    spec = importlib.util.spec_from_file_location("generate_descriptions", ROOT / "scripts/generate_descriptions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setenv("FAKE_LLM_KEY", KEY)
    llm.faults = ["500", "429", "malformed", "garbage", "short", "slow", "fenced"]
    out, cache = tmp_path / "toy.yaml", tmp_path / "cache.jsonl"
    with caplog.at_level(logging.DEBUG):
        rc = script.main(["--classes", str(table), "--out", str(out), "--cache", str(cache), "--base-url",
                          llm.base_url, "--model", "fake-1", "--api-key-env", "FAKE_LLM_KEY", "--timeout", "0.3",
                          "--backoff", "0.001", "--max-retries", "6"])
    assert rc == 0
    assert llm.requests == ["brush_hair"] * 7 + LABELS[1:]  # 6 failures, then fenced JSON is accepted
    assert set(llm.auth) == {f"Bearer {KEY}"}
    assert KEY not in caplog.text
    ps = load_prompts(tmp_path, "toy", LABELS)
    assert ps.spatial[1] == ["A video about cartwheel scene 0.", "A video about cartwheel scene 1."]
    assert ps.temporal[0][1] == ("A video of brush hair generally involves the following step: step 1 of brush_hair, "
                                 "which is a sub-step.")
    records = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["raw_label"] for r in records] == LABELS
    assert all(r["prompt_version"] == PROMPT_VERSION and r["model"] == "fake-1" for r in records)


def test_interrupt_and_resume(llm, table, tmp_path):
    out, cache = tmp_path / "toy.yaml", tmp_path / "cache.jsonl"
    llm.fail_after = 2                       # the endpoint goes down for good after two classes
    sleeps = []
    with pytest.raises(GenerationError, match="'catch'.*run again to resume"):
        generate_prompts_file(table, out, _opts(llm, max_retries=2), cache_path=cache, sleep=sleeps.append)
    assert sleeps == [0.001, 0.002]          # bounded exponential back-off
    assert llm.requests == ["brush_hair", "cartwheel", "catch", "catch", "catch"]
    assert len(cache.read_text().splitlines()) == 2 and not out.exists()

    llm.fail_after, llm.requests = None, []
    with open(cache, "a") as f:              # a run killed mid-write leaves half a line
        f.write('{"key": "[\\"msta-desc')
    generate_prompts_file(table, out, _opts(llm), cache_path=cache)
    assert llm.requests == LABELS[2:]        # only the missing classes
    first = read_prompts_file(out)

    llm.requests = []
    generate_prompts_file(table, out, _opts(llm), cache_path=cache)
    assert llm.requests == [] and read_prompts_file(out) == first
    # another model is another cache key
    generate_prompts_file(table, out, _opts(llm, model="fake-2"), cache_path=cache)
    assert llm.requests == LABELS


def test_readable_names_from_existing_file(llm, table, tmp_path):
    out = tmp_path / "toy.yaml"
    out.write_text("dataset: toy\nclasses:\n  brush_hair:\n    name: brushing hair\n")
    generate_prompts_file(table, out, _opts(llm), cache_path=tmp_path / "c.jsonl")
    classes = read_prompts_file(out)[1]
    assert classes["brush_hair"]["name"] == "brushing hair" and classes["chew"]["name"] == "chew"
    assert classes["brush_hair"]["temporal"][0].startswith("A video of brushing hair generally involves")


def test_client_errors_are_not_retried(llm, table, tmp_path):
    llm.faults = ["401"]
    with pytest.raises(GenerationError, match="HTTP 401"):
        generate_prompts_file(table, tmp_path / "toy.yaml", _opts(llm), cache_path=tmp_path / "c.jsonl")
    assert llm.requests == ["brush_hair"]


def test_missing_key_variable(llm, table, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(GenerationError, match=r"\$NO_SUCH_KEY_VAR is not set"):
        generate_prompts_file(table, tmp_path / "toy.yaml", _opts(llm, api_key_env="NO_SUCH_KEY_VAR"),
                              cache_path=tmp_path / "c.jsonl")
    assert llm.requests == []


def test_parse_answer():
    ok = json.dumps({"spatial": ["people on a beach", "A video about sand."], "temporal": ["a step.", "b"]})
    s, t = parse_answer(ok, "x", 2)
    assert s == ["A video about people on a beach.", "A video about sand."]
    assert t[0] == "A video of x generally involves the following step: a step, which is a sub-step."
    for bad in ["[]", "{}", json.dumps({"spatial": ["a"], "temporal": ["b", "c"]}),
                json.dumps({"spatial": ["a", ""], "temporal": ["b", "c"]}),
                json.dumps({"spatial": ["word " * 50, "a"], "temporal": ["b", "c"]})]:
        with pytest.raises(MalformedAnswer):
            parse_answer(bad, "x", 2)
