"""Generate spatial and temporal class descriptions with an OpenAI-compatible chat endpoint.

Example (msta-descriptions, or python scripts/generate_descriptions.py from a checkout):
    msta-descriptions --classes labels/hmdb51.csv --out prompts/hmdb51.yaml \
        --base-url https://api.openai.com/v1 --model gpt-4o-mini --api-key-env OPENAI_API_KEY

Answers are cached (default .cache/descriptions/<dataset>.jsonl); an interrupted run resumes when started again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from msta.cli.common import CliParser, check_out_file, run_command, setup_cli_logging
from msta.errors import UsageError
from msta.text.generator import PROMPT_VERSION, GeneratorOptions, generate_prompts_file


def build_parser() -> argparse.ArgumentParser:
    d = GeneratorOptions()
    first, _, rest = __doc__.partition("\n")
    p = CliParser(f"{first} (prompt {PROMPT_VERSION})\n{rest}", opts=False)
    p.add_argument("--classes", required=True, help="class table, `id,name` CSV with header")
    p.add_argument("--out", required=True, help="prompts file to write, e.g. prompts/hmdb51.yaml")
    p.add_argument("--dataset", help="dataset key (default: the stem of --out)")
    p.add_argument("--names", help="prompts file with the readable names (default: --out if it exists)")
    p.add_argument("--cache", help="JSONL answer cache (default .cache/descriptions/<dataset>.jsonl)")
    p.add_argument("--base-url", default=d.base_url, help="API root with version, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", default=d.model)
    p.add_argument("--api-key-env", default=d.api_key_env, help="variable holding the key; '' sends none")
    p.add_argument("--num", type=int, default=d.num_descriptions, help="descriptions per type and class")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=d.max_retries)
    p.add_argument("--backoff", type=float, default=d.backoff, help="first retry delay in seconds, doubled each time")
    return p


def _run(a: argparse.Namespace) -> int:
    setup_cli_logging()
    check_out_file(a.out)
    try:
        opts = GeneratorOptions(base_url=a.base_url, model=a.model, api_key_env=a.api_key_env,
                                num_descriptions=a.num, temperature=a.temperature, timeout=a.timeout,
                                max_retries=a.max_retries, backoff=a.backoff)
    except ValueError as e:   # --num, --max-retries, --timeout out of range
        raise UsageError(str(e)) from None
    generate_prompts_file(a.classes, Path(a.out), opts, dataset=a.dataset, names_from=a.names, cache_path=a.cache)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
