"""The shipped example and the code in the docs do what the docs say they do."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMBED = ROOT / "examples" / "embed.py"
DOCS = ("docs/embedding.md", "docs/concepts.md", "docs/streaming.md")

# What examples/embed.py prints; the times are exact on the virtual clock.
EXPECTED_OUTPUT = """\
question 1: 'hello from limited' from limited after 5 attempt(s) in 1.0s
    limited  RateLimited              → cooldown
    silent   TransportFailure         → failover
    broken   TransientServerFailure   → backoff
    broken   TransientServerFailure   → backoff
    limited  ok                       → return
question 2: 'hello from limited' from limited after 1 attempt(s) in 0.0s
    limited  ok                       → return
question 3: 'hello from limited' from limited after 1 attempt(s) in 0.0s
    limited  ok                       → return

targets:
    limited  Active   Healthy        breaker Closed failures {'RateLimited': 1}
    broken   Active   CircuitOpen    breaker Open   failures {'TransientServerFailure': 2}
    silent   Active   Healthy        breaker Closed failures {'TransportFailure': 1}

operator: pause limited
question 4: AllTargetsFailed after 1 attempt(s) in 0.3s, last TransportFailure, retry in 59.2s

errors:
    RequestFailed InvalidRequest: not a chat completion request: \
required: a non-empty array of messages @ $.messages
    RequestFailed InvalidRequest (status 404): \
The model `llama-3` does not exist or no target serves it.

target events:
     0.5s breaker {'target_id': 'broken', 'state': 'Open', 'note': '2 consecutive failures'}
     1.0s target_state {'target_id': 'limited', 'state': 'Paused', 'note': 'operator pause'}
     1.3s breaker {'target_id': 'silent', 'state': 'Open', 'note': '2 consecutive failures'}
     1.3s target_state {'target_id': 'limited', 'state': 'Active', 'note': 'operator resume'}

upstream calls: {'key-limited': 4, 'key-broken': 2, 'key-silent': 2}
"""


def _load_embed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oswitch_example_embed", EMBED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_blocks(doc: str) -> list[tuple[int, str]]:
    """Every fenced ```python block of ``doc`` as (first line number, source)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


def _without_times(text: str) -> str:
    return re.sub(r"\d+\.\ds\b", "<t>s", text)


async def test_embed_example_prints_the_documented_run(
    autojump_clock: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/embed.py's main keeps answering through the three bad keys, as documented."""
    await _load_embed().main()
    assert capsys.readouterr().out == EXPECTED_OUTPUT


def test_embed_example_runs_as_a_script() -> None:
    """`python examples/embed.py` runs on the real clock and tells the same story."""
    done = subprocess.run(
        [sys.executable, str(EMBED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _without_times(done.stdout) == _without_times(EXPECTED_OUTPUT)


@pytest.mark.parametrize("doc", DOCS)
def test_every_python_block_compiles(doc: str) -> None:
    """Every ```python block in the doc is valid Python on its own."""
    blocks = _python_blocks(doc)
    if doc == "docs/embedding.md":
        assert len(blocks) >= 6
    for line, source in blocks:
        compile(source, f"{doc}:{line}", "exec")


def test_embedding_doc_config_in_code_parses() -> None:
    """The config built in code in docs/embedding.md is valid and resolves its providers."""
    (source,) = [src for _, src in _python_blocks("docs/embedding.md") if "def build_config" in src]
    namespace: dict[str, Any] = {}
    exec(compile(source, "docs/embedding.md", "exec"), namespace)
    config = namespace["build_config"]()
    assert [(t.target_id, t.base_url, t.api_key_env) for t in config.targets] == [
        ("openai-mini", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        ("local-vllm", "http://127.0.0.1:8000/v1", None),
        ("openai-big", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ]


async def test_embedding_doc_test_example_passes(autojump_clock: object) -> None:
    """The pytest example in docs/embedding.md passes, exact virtual durations and all."""
    tests = [src for _, src in _python_blocks("docs/embedding.md") if "async def test_" in src]
    shown = sum(src.count("async def test_") for src in tests)
    assert shown >= 1, "docs/embedding.md shows no test"
    ran = 0
    for source in tests:
        namespace: dict[str, Any] = {"__name__": "embedding_doc_example"}
        exec(compile(source, "docs/embedding.md", "exec"), namespace)
        for name, function in namespace.items():
            if name.startswith("test_"):
                await function(autojump_clock)
                ran += 1
    assert ran == shown
