"""The description generator end to end against a real HTTP server on loopback that answers like a chat endpoint."""
import base64
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
from msta.text.generator import (PROMPT_VERSION, ChatClient, GenerationError, GeneratorOptions, MalformedAnswer,
                                 generate_prompts_file, parse_answer, redact_url)

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


# ------------------------------------------------------------------------------------------------------------------
# API key hygiene (issue 14 item 8), against a real loopback server that reflects what it was sent

class Reflector:
    """Answers like a chat endpoint, or with an error whose body quotes the request's Authorization header and path
    (as some servers and proxies do); `plan` holds the next responses: "401", "500", "leaky" (an answer that quotes
    the key and is not the JSON asked for), "ok"."""

    def __init__(self):
        self.plan: list[str] = []
        self.seen: list[tuple[str, str]] = []   # (path, Authorization) of every request

    def respond(self, handler):
        handler.rfile.read(int(handler.headers["Content-Length"]))
        auth = handler.headers.get("Authorization", "")
        self.seen.append((handler.path, auth))
        step = self.plan.pop(0) if self.plan else "ok"
        if step in ("401", "500"):
            body = f"error: credentials {auth!r} rejected for {handler.path}".encode()
            handler.send_response(int(step))
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        content = json.dumps({"spatial": ["A video about a scene.", "A video about a place."],
                              "temporal": ["step one", "step two"]})
        if step == "leaky":
            content = f"I cannot use the key {auth}, sorry"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


@pytest.fixture
def reflector():
    fake = Reflector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            fake.respond(self)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.port = server.server_address[1]
    yield fake
    server.shutdown()
    server.server_close()


def _one_class_table(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("id,name\n0,brush_hair\n")
    return path


def test_a_key_reflected_in_an_error_body_never_reaches_the_log(reflector, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_LLM_KEY", KEY)
    reflector.plan = ["401"]
    opts = GeneratorOptions(base_url=f"http://127.0.0.1:{reflector.port}/v1", model="fake-1",
                            api_key_env="FAKE_LLM_KEY", max_retries=0, backoff=0.001)
    with caplog.at_level(logging.DEBUG), pytest.raises(GenerationError) as e:
        generate_prompts_file(_one_class_table(tmp_path), tmp_path / "toy.yaml", opts, cache_path=tmp_path / "c.jsonl")
    assert reflector.seen[0][1] == f"Bearer {KEY}"              # the key was sent, and reflected in the body
    assert "HTTP 401" in str(e.value) and "credentials 'Bearer ***' rejected" in str(e.value)
    assert "$FAKE_LLM_KEY" in str(e.value)                      # the variable is named, its value is not
    assert KEY not in str(e.value) and KEY not in caplog.text


def test_reflected_keys_in_retried_errors_and_answers_are_redacted(reflector, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_LLM_KEY", KEY)
    reflector.plan = ["500", "leaky", "ok"]
    opts = GeneratorOptions(base_url=f"http://127.0.0.1:{reflector.port}/v1", model="fake-1",
                            api_key_env="FAKE_LLM_KEY", max_retries=3, backoff=0.001)
    cache = tmp_path / "c.jsonl"
    with caplog.at_level(logging.DEBUG):
        generate_prompts_file(_one_class_table(tmp_path), tmp_path / "toy.yaml", opts, cache_path=cache)
    assert len(reflector.seen) == 3 and caplog.text.count("attempt") == 2
    assert "Bearer ***" in caplog.text and KEY not in caplog.text
    assert KEY not in cache.read_text() and KEY not in (tmp_path / "toy.yaml").read_text()


def test_credentials_in_the_base_url_are_sent_as_auth_and_never_shown(reflector, tmp_path, caplog):
    password, token = "pa55-w0rd-secret", "q-token-987654"
    base = f"http://alice:{password}@127.0.0.1:{reflector.port}/v1?api_key={token}"
    reflector.plan = ["401"]
    opts = GeneratorOptions(base_url=base, model="fake-1", api_key_env="", max_retries=0)
    assert password not in repr(opts) and token not in repr(opts)
    with caplog.at_level(logging.DEBUG), pytest.raises(GenerationError) as e:
        generate_prompts_file(_one_class_table(tmp_path), tmp_path / "toy.yaml", opts, cache_path=tmp_path / "c.jsonl")
    path, auth = reflector.seen[0]
    assert path == f"/v1/chat/completions?api_key={token}"     # the gateway still gets its query key
    assert auth == "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    text = str(e.value) + caplog.text
    assert password not in text and token not in text and auth.split()[1] not in text
    assert "api_key=***" in text and "127.0.0.1" in text


def test_a_key_given_as_the_variable_name_is_not_echoed(llm, table, tmp_path, monkeypatch, caplog):
    pasted = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7" * 2
    monkeypatch.delenv(pasted, raising=False)
    opts = _opts(llm, api_key_env=pasted)
    with caplog.at_level(logging.DEBUG), pytest.raises(GenerationError) as e:
        generate_prompts_file(table, tmp_path / "toy.yaml", opts, cache_path=tmp_path / "c.jsonl")
    assert "takes the NAME of the environment variable" in str(e.value) and "looks like a key" in str(e.value)
    assert pasted not in str(e.value) and pasted not in caplog.text and pasted not in repr(opts)
    assert llm.requests == []


@pytest.mark.parametrize("url, warned", [("http://192.0.2.10:8000/v1", True), ("http://llm.example.org/v1", True),
                                         ("http://127.0.0.1:8000/v1", False), ("http://localhost/v1", False),
                                         ("http://[::1]:8000/v1", False), ("https://llm.example.org/v1", False)])
def test_a_key_over_plain_http_to_another_host_is_warned_about(url, warned, caplog):
    with caplog.at_level(logging.WARNING):
        ChatClient(GeneratorOptions(base_url=url), api_key=KEY)  # constructing sends nothing
    assert ("sent over plain http" in caplog.text) is warned and KEY not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ChatClient(GeneratorOptions(base_url=url, api_key_env=""), api_key=None)  # no key: nothing to warn about
    assert "plain http" not in caplog.text


def test_redact_url():
    assert redact_url("https://u:p%40ss@h.example/v1?api_key=XYZ&x=1") == "https://***@h.example/v1?api_key=***&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
