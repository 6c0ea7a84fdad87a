"""``import oswitch`` loads the engine only; the control and sidecar stacks load on use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The server stacks: the control channel's websocket (trio_websocket, wsproto) and the
# sidecar's HTTP server (hypercorn, h2, h11).
SERVER_STACKS = ("trio_websocket", "wsproto", "hypercorn", "h2", "h11")


def _loaded_after(statement: str) -> list[str]:
    """The modules of the server stacks, and oswitch's control and sidecar packages,
    loaded in a fresh interpreter by ``statement``."""
    probe = (
        f"{statement}\n"
        "import json, sys\n"
        f"stacks = {SERVER_STACKS!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in stacks\n"
        "    or m.startswith(('oswitch.control', 'oswitch.sidecar')))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_import_oswitch_loads_no_server_stack_beyond_what_httpx_loads() -> None:
    """``import oswitch`` pulls in neither the control channel's websocket stack nor the
    sidecar's HTTP server, only what httpx itself imports."""
    by_httpx = set(_loaded_after("import httpx"))
    by_oswitch = set(_loaded_after("import oswitch"))
    assert sorted(by_oswitch - by_httpx) == []


@pytest.mark.parametrize(
    "statement",
    [
        "from oswitch import serve_control",
        "import oswitch; oswitch.serve_control",
        "from oswitch import *; serve_control",
    ],
)
def test_serve_control_loads_the_control_stack_on_first_use(statement: str) -> None:
    """Each way of reaching ``oswitch.serve_control`` still works, and loads the
    control channel (and its websocket stack) then."""
    loaded = _loaded_after(
        f"{statement}\nimport oswitch.control.server as s\n"
        "assert s.serve_control is __import__('oswitch').serve_control"
    )
    assert "oswitch.control.server" in loaded and "trio_websocket" in loaded


def test_serve_control_is_the_control_servers_function() -> None:
    """The lazily loaded name is the control server's own ``serve_control``, listed in
    ``dir(oswitch)``; an unknown name is still an AttributeError."""
    import oswitch
    from oswitch.control.server import serve_control

    assert oswitch.serve_control is serve_control
    assert "serve_control" in dir(oswitch) and "serve_control" in oswitch.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        oswitch.nope  # noqa: B018


def test_import_oswitch_reads_its_version_only_when_asked() -> None:
    """``import oswitch`` does not load importlib.metadata (20-100 ms); ``__version__``
    is read on first use and is the installed package's version."""
    # Blocked rather than looked for in sys.modules afterwards: httpx loads its CLI's
    # optional packages (click, rich, pygments: metadata through pygments' plugins)
    # whenever they happen to be installed, and falls back without them.
    probe = (
        "import sys\n"
        "sys.modules['importlib.metadata'] = None\n"
        "import oswitch\n"
        "del sys.modules['importlib.metadata']\n"
        "from importlib.metadata import version\n"
        "assert oswitch.__version__ == version('oswitch') and '__version__' in dir(oswitch)\n"
    )
    subprocess.run([sys.executable, "-c", probe], timeout=60, check=True)
