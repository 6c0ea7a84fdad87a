"""The pure core imports no async framework, HTTP client or socket server."""

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
UPPER_LAYERS = ("oswitch.runtime", "oswitch.providers", "oswitch.control", "oswitch.sidecar")


def _probe() -> dict[str, list[str]]:
    package_dir = Path(__file__).resolve().parent.parent / "oswitch"
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, str(package_dir)],
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
    expected = {"breaker", "bucket", "backoff", "policy", "scoring", "error_class"}
    assert {f"oswitch.core.{name}" for name in expected} <= set(probe["modules"])
    loaded = probe["loaded"]
    forbidden = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert forbidden == []
    upward = sorted(m for m in loaded if m.startswith(UPPER_LAYERS) or m == "oswitch.cli")
    assert upward == []
