"""Imports point down the layers: the pure core and the sans-IO wire module load no
async framework, HTTP client or socket; the transport loads nothing else of oswitch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Import every oswitch.core module in a fresh interpreter and report what got loaded.
# The ``oswitch`` package is stubbed so that its __init__ (the public facade, which
# rightly pulls in the trio runtime) does not run: only the core's own imports count.
_PROBE = """
import importlib, json, pkgutil, sys, types
package = types.ModuleType("oswitch")
package.__path__ = [sys.argv[1]]
sys.modules["oswitch"] = package
import oswitch.core
names = [m.name for m in pkgutil.iter_modules(oswitch.core.__path__, "oswitch.core.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""

FORBIDDEN = {
    "trio",
    "httpx",
    "httpcore",
    "anyio",
    "sniffio",
    "h11",
    "h2",
    "trio_websocket",
    "wsproto",
    "hypercorn",
    "asyncio",
}
UPPER_LAYERS = (
    "oswitch.runtime",
    "oswitch.providers",
    "oswitch.control",
    "oswitch.sidecar",
    "oswitch.transport",
)

# Import oswitch.transport's sans-IO modules alone (wire, then request_head; the package
# stubbed too, since it exports the trio pool), then the whole transport package, in a
# fresh interpreter.
_TRANSPORT_PROBE = """
import importlib, json, sys, types
for name, path in (("oswitch", sys.argv[1]), ("oswitch.transport", sys.argv[1] + "/transport")):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
importlib.import_module("oswitch.core.immutable")
immutable = sorted(sys.modules)
importlib.import_module("oswitch.transport.wire")
wire = sorted(sys.modules)
importlib.import_module("oswitch.transport.request_head")
request_head = sorted(sys.modules)
del sys.modules["oswitch.transport"]
importlib.import_module("oswitch.transport")
print(json.dumps({
    "immutable": immutable,
    "wire": wire,
    "request_head": request_head,
    "transport": sorted(sys.modules),
}))
"""
# The wire module is sans-IO: besides trio and the HTTP stacks, no sockets or TLS.
NO_IO = FORBIDDEN | {"socket", "ssl", "selectors", "select"}


def _probe(script: str = _PROBE) -> dict[str, list[str]]:
    package_dir = Path(__file__).resolve().parent.parent / "oswitch"
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(package_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe: dict[str, list[str]] = json.loads(result.stdout)
    return probe


def test_core_modules_import_no_io_libraries() -> None:
    """No oswitch.core module loads trio, httpx, a websocket/HTTP server or an upper layer."""
    probe = _probe()
    expected = {
        "breaker",
        "bucket",
        "backoff",
        "policy",
        "scoring",
        "error_class",
        "ledger",
        "target_health",
        "deadline_learning",
        "ratelimit_headers",
        "tokens",
        "headroom",
    }
    assert {f"oswitch.core.{name}" for name in expected} <= set(probe["modules"])
    loaded = probe["loaded"]
    forbidden = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert forbidden == []
    upward = sorted(m for m in loaded if m.startswith(UPPER_LAYERS) or m == "oswitch.cli")
    assert upward == []


# The one module of oswitch every layer may use: the records' decorator, which imports
# nothing of oswitch (test_the_immutable_helper_imports_nothing_of_oswitch).
IMMUTABLE = {"oswitch.core", "oswitch.core.immutable"}


def test_the_immutable_helper_imports_nothing_of_oswitch() -> None:
    """oswitch.core.immutable, which the transport may use, loads no other oswitch
    module and no I/O."""
    loaded = _probe(_TRANSPORT_PROBE)["immutable"]
    assert sorted(m for m in loaded if m.split(".")[0] in NO_IO) == []
    ours = {m for m in loaded if m.startswith("oswitch")}
    assert ours == {"oswitch", "oswitch.transport"} | IMMUTABLE  # the probe's two packages


def test_the_wire_module_is_sans_io() -> None:
    """oswitch.transport.wire loads no trio, httpx, h11, socket or TLS module, and nothing
    else of oswitch."""
    loaded = _probe(_TRANSPORT_PROBE)["wire"]
    assert "oswitch.transport.wire" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in NO_IO) == []
    ours = {m for m in loaded if m.startswith("oswitch")}
    assert ours == {"oswitch", "oswitch.transport", "oswitch.transport.wire"} | IMMUTABLE


def test_the_request_head_module_is_sans_io() -> None:
    """oswitch.transport.request_head loads no trio, httpx, h11, socket or TLS module, and
    nothing of oswitch beyond the wire module."""
    loaded = _probe(_TRANSPORT_PROBE)["request_head"]
    assert sorted(m for m in loaded if m.split(".")[0] in NO_IO) == []
    ours = {m for m in loaded if m.startswith("oswitch")}
    assert (
        ours
        == {
            "oswitch",
            "oswitch.transport",
            "oswitch.transport.wire",
            "oswitch.transport.request_head",
        }
        | IMMUTABLE
    )


def test_the_transport_loads_nothing_else_of_oswitch() -> None:
    """oswitch.transport (the pool included) imports no other oswitch module: it sits
    under the runtime and knows nothing of targets, providers or config."""
    loaded = _probe(_TRANSPORT_PROBE)["transport"]
    assert "oswitch.transport.pool" in loaded
    outside = [
        m
        for m in loaded
        if m.startswith("oswitch.") and m.split(".")[1] != "transport" and m not in IMMUTABLE
    ]
    assert outside == []


def test_metrics_are_usable_without_the_sidecar() -> None:
    """oswitch.metrics (what an embedding program scrapes) loads no sidecar module and
    no HTTP server."""
    script = (
        "import json, sys; import oswitch.metrics; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith(('oswitch.sidecar', 'hypercorn')))))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
