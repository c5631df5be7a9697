"""Keeping secrets out of what the description generator logs, raises and caches.

A key or password reaches text in several ways: a base URL with credentials (`https://user:password@host/v1`,
`?api_key=...`), a key pasted into `--api-key-env` instead of a variable name, and servers that quote the request's
Authorization header back in an error body or an answer. `redact_url` and `Redactor` replace such secrets by
`***`; `RedactingFilter` applies them to every record of a logger as a last line of defence.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import urllib.parse
from typing import Any, Optional, Sequence

__all__ = ["Redactor", "RedactingFilter", "is_loopback", "key_variable", "looks_like_key", "redact_url",
           "split_credentials"]

_KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "xai-", "pk-", "AIza", "ghp_", "glpat-")
_SECRET_QUERY = re.compile(r"(?i)^(api[-_]?key|key|token|access[-_]?token|secret|sig|signature|password|auth)$")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def looks_like_key(value: str) -> bool:
    """True when `value` is not a plausible environment variable name (a key pasted into --api-key-env)."""
    return (not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value) or value.startswith(_KEY_PREFIXES)
            or (len(value) >= 24 and any(c.isdigit() for c in value) and not value.isupper()))


def key_variable(name: str) -> str:
    """How messages show the --api-key-env value: "$NAME", or a placeholder when it looks like a key itself."""
    if not name:
        return ""
    return f"${name}" if not looks_like_key(name) else "the --api-key-env value (not shown: it looks like a key)"


def split_credentials(url: str) -> tuple[str, list[str], Optional[tuple[str, str]]]:
    """(chat completions URL without user:password, the secrets `url` holds, (user, password) or None).

    Key-like query values (`?api_key=...`, as some gateways take) stay in the request URL but count as secrets.
    """
    parts = urllib.parse.urlsplit(url)
    secrets, userinfo, netloc = [], None, parts.netloc
    if "@" in parts.netloc:
        info, netloc = parts.netloc.rsplit("@", 1)
        user, _, password = info.partition(":")
        userinfo = (urllib.parse.unquote(user), urllib.parse.unquote(password))
        secrets += [s for s in (info, password, userinfo[1]) if s]  # the user name alone is no secret
    secrets += [v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                if _SECRET_QUERY.match(k) and v]
    path = parts.path.rstrip("/") + "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment)), secrets, userinfo


def redact_url(url: str) -> str:
    """`url` with user:password and key-like query values replaced by `***`, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    netloc = ("***@" + parts.netloc.rsplit("@", 1)[1]) if "@" in parts.netloc else parts.netloc
    query = "&".join(f"{k}=***" if _SECRET_QUERY.match(k) and v else (f"{k}={v}" if v else k)
                     for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Redactor:
    """Replaces every known secret (and its URL-quoted form) by `***` in a text."""

    def __init__(self, secrets: Sequence[str] = ()):
        self.secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: Optional[str]) -> None:
        for s in secrets:
            if s and len(s) >= 3:  # shorter ones would blank out ordinary words
                self.secrets += [s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)]
        self.secrets = sorted(set(self.secrets), key=len, reverse=True)  # longest first: a key before its prefix

    def __call__(self, text: Any) -> str:
        text = str(text)
        for s in self.secrets:
            text = text.replace(s, "***")
        return text


class RedactingFilter(logging.Filter):
    """Last line of defence on this module's logger: no record leaves with a secret of a live client in it."""

    def __init__(self):
        super().__init__()
        self.redactors: list[Redactor] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactors:
            message = record.getMessage()
            clean = message
            for r in self.redactors:
                clean = r(clean)
            if clean != message:
                record.msg, record.args = clean, None
        return True
