"""LLM description generator: asks an OpenAI-compatible chat endpoint for spatial and temporal class descriptions.

One request per class to `<base_url>/chat/completions`. Every accepted answer is appended to a JSONL cache keyed by
(PROMPT_VERSION, model, raw label, readable name, N), so an interrupted run resumes where it stopped and a changed
prompt or model never reuses stale answers. HTTP errors, timeouts and malformed answers are retried with bounded
exponential back-off. Only the standard library is used for HTTP, so the toolkit needs no client package.

Secrets stay out of logs, messages and the cache: the key travels only in the Authorization header; credentials in
the base URL (`https://user:password@host/v1`, `?api_key=...`) are taken out of it (user:password is sent as HTTP
Basic auth) and shown as `***`; every text that is logged or raised (HTTP error bodies a server may reflect the key
in, malformed answers) has the key and those credentials replaced by `***`; the value of `--api-key-env` is named
only when it looks like a variable name, never when a user passed the key itself; and a key sent over plain http
to a host other than loopback is warned about.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import UserError
from .redaction import (RedactingFilter, Redactor, is_loopback, key_variable, looks_like_key, redact_url,
                        split_credentials)

__all__ = [
    "PROMPT_VERSION", "ChatClient", "DescriptionCache", "GenerationError", "GeneratorOptions", "MalformedAnswer",
    "build_messages", "generate_descriptions", "generate_prompts_file", "parse_answer", "redact_url",
]

_logger = logging.getLogger(__name__)

# Bump when the wording below changes: cached answers of another version are not reused.
PROMPT_VERSION = "msta-desc-v1"

_SYSTEM = ("You write short, concrete descriptions of human actions for training a video classifier. "
           "Answer with JSON only, no prose and no code fences.")
_USER = """Action class: "{name}" (dataset label: {raw_label}{dataset_part}).
Write {n} spatial and {n} temporal descriptions of this action.
- spatial: {n} different sentences about what the video looks like: the people, objects, clothing and scene. Each \
starts with "A video about" and has about 12 words (at most 25).
- temporal: the action split into {n} ordered sub-steps, first to last. Each is a short phrase (at most 20 words) \
without a full stop, e.g. "gathering the hair over one shoulder".
Answer exactly: {{"spatial": [{n} strings], "temporal": [{n} strings]}}"""
_TEMPORAL = "A video of {name} generally involves the following step: {step}, which is a sub-step."


class GenerationError(UserError, RuntimeError):
    """A class could not be generated (after the retries) or the endpoint refused the request."""


class MalformedAnswer(ValueError):
    """The endpoint answered, but not with the JSON asked for."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: Optional[float] = None):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class GeneratorOptions:
    """Endpoint and retry settings.

    Attributes:
        base_url: the API root including the version, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:8000/v1".
        model: the model name sent in the request (part of the cache key).
        api_key_env: the environment variable holding the API key; "" sends no key (local servers).
        num_descriptions: N spatial and N temporal descriptions per class.
        temperature: sampling temperature.
        timeout: seconds per HTTP request.
        max_retries: retries per class after the first attempt.
        backoff: first back-off delay in seconds; doubles per retry.
        max_backoff: cap on one delay (also on a server's Retry-After).
        max_words: answers with a longer text are malformed (keeps texts inside CLIP's 77-token context).
    """
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    num_descriptions: int = 2
    temperature: float = 0.7
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_words: int = 40

    def __post_init__(self):
        if self.num_descriptions < 1 or self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ValueError(f"GeneratorOptions: need num_descriptions >= 1, max_retries >= 0, timeout > 0, "
                             f"backoff >= 0; got num_descriptions={self.num_descriptions}, max_retries="
                             f"{self.max_retries}, timeout={self.timeout}, backoff={self.backoff}")

    def __repr__(self) -> str:  # the base URL may hold credentials, api_key_env may be a key pasted by mistake
        return (f"GeneratorOptions(base_url={redact_url(self.base_url)!r}, model={self.model!r}, "
                f"api_key_env={key_variable(self.api_key_env)!r}, num_descriptions={self.num_descriptions})")


_FILTER = RedactingFilter()
_logger.addFilter(_FILTER)


def build_messages(raw_label: str, name: str, n: int, dataset: str = "") -> list[dict[str, str]]:
    """The chat messages for one class (wording versioned by PROMPT_VERSION)."""
    user = _USER.format(name=name, raw_label=raw_label, n=n, dataset_part=f", dataset {dataset}" if dataset else "")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def parse_answer(content: str, name: str, n: int, max_words: int = 40) -> tuple[list[str], list[str]]:
    """Validates an answer and puts it in msta's description style.

    Args:
        content: the message text, JSON `{"spatial": [n strings], "temporal": [n strings]}` (code fences tolerated).
        name: the readable class name, for the temporal sentence.
        n: the number of strings required per list.
        max_words: longest accepted text.

    Returns:
        (spatial, temporal): spatial sentences start with "A video about"; temporal sub-steps become
        "A video of <name> generally involves the following step: <step>, which is a sub-step."

    Raises:
        MalformedAnswer: not JSON, missing lists, wrong counts, empty or too-long strings.
    """
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise MalformedAnswer(f"not JSON ({e}): {content[:120]!r}") from None
    if not isinstance(data, dict):
        raise MalformedAnswer(f"expected a JSON object, got {type(data).__name__}")
    out = []
    for kind in ("spatial", "temporal"):
        items = data.get(kind)
        if not isinstance(items, list) or len(items) != n:
            raise MalformedAnswer(f"'{kind}' must be a list of {n} strings, got {items!r}"[:200])
        clean = []
        for s in items:
            if not isinstance(s, str) or not s.strip():
                raise MalformedAnswer(f"'{kind}' holds a non-string or empty item: {s!r}")
            s = " ".join(s.split())
            if len(s.split()) > max_words:
                raise MalformedAnswer(f"'{kind}' item has {len(s.split())} words > {max_words}: {s[:80]!r}")
            clean.append(_styled(kind, s, name))
        out.append(clean)
    return out[0], out[1]


def _styled(kind: str, s: str, name: str) -> str:
    if kind == "spatial":
        if not s.lower().startswith("a video about"):
            s = "A video about " + s[0].lower() + s[1:]
        return s if s[-1] in ".!?" else s + "."
    if s.lower().startswith("a video of"):  # the model wrote the whole sentence itself
        return s
    return _TEMPORAL.format(name=name, step=s.rstrip(" .").rstrip(","))


class DescriptionCache:
    """Append-only JSONL of accepted answers; one line per class, written and fsync'ed as soon as it arrives."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line_no, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    rec = json.loads(line)
                    self._records[rec["key"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    # a run killed mid-write leaves a partial last line: that class is simply asked again
                    _logger.warning("%s:%d: unreadable cache line skipped", self.path, line_no)

    @staticmethod
    def key(model: str, raw_label: str, name: str, n: int) -> str:
        return json.dumps([PROMPT_VERSION, model, raw_label, name, n])

    def get(self, key: str) -> Optional[dict[str, Any]]:
        return self._records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        record = {"key": key, **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():
                f.seek(f.tell() - 1)
                if f.read(1) != b"\n":  # end a partial line left by a killed run, or this record is lost with it
                    f.write(b"\n")
            f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self._records[key] = record

    def __len__(self) -> int:
        return len(self._records)


class ChatClient:
    """Minimal `/chat/completions` client on urllib. The API key lives only in the request header.

    Credentials in `options.base_url` are handled as secrets: user:password leaves the URL and becomes HTTP Basic
    auth (unless a key is given), key-like query values stay in the request URL but never in a message, and every
    text this client puts into an exception has the key and those credentials replaced by `***`.
    """

    def __init__(self, options: GeneratorOptions, api_key: Optional[str] = None):
        self.options = options
        self.url, secrets, userinfo = split_credentials(options.base_url)
        self.shown_url = redact_url(self.url)
        self._api_key = api_key
        self._basic = None
        if userinfo and not api_key:
            self._basic = base64.b64encode(f"{userinfo[0]}:{userinfo[1]}".encode()).decode()
        self.redact = Redactor([*secrets, api_key or "", self._basic or ""])
        _FILTER.redactors = [*_FILTER.redactors[-7:], self.redact]  # the live clients' secrets
        host = urllib.parse.urlsplit(self.url).hostname or ""
        if (api_key or secrets) and urllib.parse.urlsplit(self.url).scheme == "http" and not is_loopback(host):
            _logger.warning("descriptions: the API key is sent over plain http to %s, where anyone on the network "
                            "path can read it; use an https:// --base-url (plain http is only safe on loopback)",
                            host)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """One request; returns the message content.

        Raises:
            _Retryable: 408/429/5xx, timeouts, connection errors, an unreadable response body.
            GenerationError: other HTTP errors (bad key, wrong URL or model), which retrying cannot fix.
        """
        body = json.dumps({"model": self.options.model, "messages": messages,
                           "temperature": self.options.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        elif self._basic:
            headers["Authorization"] = f"Basic {self._basic}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.options.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = self.redact(e.read()[:200].decode(errors="replace"))  # a server may reflect the key
            if e.code in (408, 429) or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}: {detail[:80]!r}", _retry_after(e.headers.get("Retry-After"))
                                 ) from None
            key_hint = (f"the key in {key_variable(self.options.api_key_env)}" if self.options.api_key_env
                        else "whether the server needs a key (--api-key-env)")
            raise GenerationError(self.redact(f"{self.shown_url}: HTTP {e.code} {e.reason}: {detail!r}; check "
                                              f"--base-url, --model and {key_hint}")) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(self.redact(f"{type(e).__name__}: {getattr(e, 'reason', e)}")) from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError):
            raise _Retryable(self.redact(f"response is not a chat completion: {raw[:120]!r}")) from None


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own back-off
        return None


def _resolve_key(options: GeneratorOptions) -> Optional[str]:
    """The key from the variable `options.api_key_env` names; its value is never put into a message."""
    if not options.api_key_env:
        return None
    key = os.environ.get(options.api_key_env)
    if not key and looks_like_key(options.api_key_env):
        raise GenerationError("--api-key-env takes the NAME of the environment variable that holds the key, and the "
                              "value given looks like a key itself (not shown here); export it, e.g. "
                              "`export OPENAI_API_KEY=...`, and pass --api-key-env OPENAI_API_KEY")
    if not key:
        raise GenerationError(f"the API key variable ${options.api_key_env} is not set; export it, name another "
                              "variable with --api-key-env, or pass --api-key-env '' for a server without keys")
    return key


def generate_descriptions(classes: Sequence[tuple[str, str]], options: GeneratorOptions, cache_path: str | Path, *,
                          dataset: str = "", client: Optional[ChatClient] = None,
                          sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, Any]]:
    """Generates (or reads from the cache) N spatial and N temporal descriptions per class.

    Args:
        classes: (raw_label, readable name) pairs in class-table order.
        options: endpoint and retry settings.
        cache_path: the JSONL cache; created when missing, appended to per class.
        dataset: dataset key, mentioned in the prompt.
        client: a ready client (tests); default builds one with the key from `options.api_key_env`.
        sleep: the back-off sleep (tests pass a recorder).

    Returns:
        raw_label -> {"name", "spatial", "temporal"}, ready for `write_prompts_file`.

    Raises:
        GenerationError: a class failed after `max_retries` retries, or the endpoint refused the request. Answers
            received so far stay cached, so running again resumes.
    """
    cache = DescriptionCache(cache_path)
    n = options.num_descriptions
    todo = [(r, nm) for r, nm in classes if cache.get(DescriptionCache.key(options.model, r, nm, n)) is None]
    _logger.info("descriptions: %d classes, %d cached in %s, %d to request from %s (model %s, prompt %s)",
                 len(classes), len(classes) - len(todo), cache.path, len(todo), redact_url(options.base_url),
                 options.model, PROMPT_VERSION)
    if todo and client is None:
        client = ChatClient(options, _resolve_key(options))
    for done, (raw_label, name) in enumerate(todo, start=1):
        spatial, temporal, content = _ask(client, raw_label, name, dataset, options, sleep)
        cache.put(DescriptionCache.key(options.model, raw_label, name, n),
                  {"prompt_version": PROMPT_VERSION, "model": options.model, "raw_label": raw_label, "name": name,
                   "n": n, "spatial": spatial, "temporal": temporal, "answer": getattr(client, "redact", str)(content),
                   "time": time.time()})
        _logger.info("descriptions: %s done (%d/%d)", raw_label, done, len(todo))
    out = {}
    for raw_label, name in classes:
        rec = cache.get(DescriptionCache.key(options.model, raw_label, name, n))
        out[raw_label] = {"name": name, "spatial": rec["spatial"], "temporal": rec["temporal"]}
    return out


def _ask(client: ChatClient, raw_label: str, name: str, dataset: str, options: GeneratorOptions,
         sleep: Callable[[float], None]) -> tuple[list[str], list[str], str]:
    messages = build_messages(raw_label, name, options.num_descriptions, dataset)
    last, delay = "", 0.0
    for attempt in range(options.max_retries + 1):
        if attempt:
            sleep(delay)
        try:
            content = client.complete(messages)
            spatial, temporal = parse_answer(content, name, options.num_descriptions, options.max_words)
            return spatial, temporal, content
        except (_Retryable, MalformedAnswer) as e:
            redact = getattr(client, "redact", str)  # an answer may quote the key back
            last = redact(f"{type(e).__name__ if isinstance(e, MalformedAnswer) else 'retryable'}: {e}")
            delay = min(options.max_backoff, options.backoff * 2 ** attempt)
            if isinstance(e, _Retryable) and e.retry_after is not None:
                delay = min(options.max_backoff, max(delay, e.retry_after))
            _logger.warning("descriptions: %s attempt %d/%d failed (%s)", raw_label, attempt + 1,
                            options.max_retries + 1, last)
    raise GenerationError(f"class '{raw_label}': no valid answer after {options.max_retries + 1} attempts (last: "
                          f"{last}); answers so far are cached, run again to resume")


def generate_prompts_file(class_table: str | Path, out: str | Path, options: GeneratorOptions, *,
                          dataset: Optional[str] = None, names_from: Optional[str | Path] = None,
                          cache_path: Optional[str | Path] = None, client: Optional[ChatClient] = None,
                          sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, Any]]:
    """Class table in, `prompts/<dataset>.yaml` out: what scripts/generate_descriptions.py runs.

    Args:
        class_table: `id,name` CSV; its names are the raw labels.
        out: the prompts file to write; its stem is the dataset key unless `dataset` is given.
        options: endpoint and retry settings.
        dataset: dataset key (defaults to the stem of `out`).
        names_from: a prompts file whose readable names to use; otherwise an existing `out` file's names, else the
            raw labels with underscores replaced.
        cache_path: the JSONL cache (default `.cache/descriptions/<dataset>.jsonl`).
    """
    from msta.text.importer import read_class_table
    from msta.text.prompts import raw_to_name, read_prompts_file, write_prompts_file

    out = Path(out)
    dataset = dataset or out.stem
    labels = read_class_table(class_table)
    names_file = Path(names_from) if names_from else (out if out.is_file() else None)
    known = read_prompts_file(names_file)[1] if names_file else {}
    pairs = [(lb, (known.get(lb) or {}).get("name") or raw_to_name(lb)) for lb in labels]
    cache_path = Path(cache_path) if cache_path else Path(".cache") / "descriptions" / f"{dataset}.jsonl"
    classes = generate_descriptions(pairs, options, cache_path, dataset=dataset, client=client, sleep=sleep)
    source = f"generated by {options.model} via {PROMPT_VERSION} (scripts/generate_descriptions.py)"
    write_prompts_file(out, dataset, classes, source=source)
    _logger.info("descriptions: wrote %d classes to %s", len(classes), out)
    return classes
