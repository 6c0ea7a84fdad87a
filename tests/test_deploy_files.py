"""The deployment files in deploy/: Dockerfile, compose example, systemd unit, config.

Docker need not be here: the Dockerfile is parsed (instructions, continuation lines,
exec forms, build stages) and held to its shape — a slim Python base, a fixed non-root
user, a health check that really answers against a live sidecar, ``oswitch serve`` as
the entrypoint, nothing secret baked in. The unit file and the compose file are parsed
the same way, and every file must agree with the example config they run. Only
``test_the_image_builds_and_checks_its_config`` needs Docker; it is skipped without a
reachable Docker daemon (so in CI) or without the base image already pulled.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from oswitch import load_config
from oswitch.cli import build_parser
from oswitch.config import ServerConfig
from oswitch.runtime.switcher import open_switcher
from oswitch.sidecar.serve import LOOPBACK, serve_sidecar
from oswitch.testing import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONFIG_IN_IMAGE = "/etc/oswitch/oswitch.toml"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW", re.IGNORECASE)


# ---- a Dockerfile reader -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array form's argv; fails the test if this is the shell form."""
        argv = json.loads(self.args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), self
        return argv


def read_dockerfile(text: str) -> tuple[dict[str, str], list[list[Instruction]]]:
    """Global ARG defaults and the build stages (each a FROM and what follows).

    Follows the Dockerfile reference: parser directives only at the very top, comment
    lines dropped (also inside continuations), a trailing backslash continues the line.
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines) and re.match(r"#\s*\w+\s*=", lines[index]):
        assert not lines[index].lstrip("# ").startswith("escape"), "escape directive unsupported"
        index += 1
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines[index:], start=index + 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword=keyword.upper(), args=args.strip(), line=start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
        else:
            assert instruction.keyword == "ARG", f"{instruction} before the first FROM"
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
    return global_args, stages


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m[1] or m[2]], value)


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[list[Instruction]]]:
    return read_dockerfile((DEPLOY / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final_stage(dockerfile: tuple[dict[str, str], list[list[Instruction]]]) -> list[Instruction]:
    return dockerfile[1][-1]


# ---- a reader for the YAML the compose file uses -------------------------------------


def read_yaml_subset(text: str) -> Any:
    """Block mappings and sequences, flow lists and maps of scalars, ``&anchor`` and
    ``<<: *anchor``; anything else fails, so the file stays within what is checked."""
    rows: list[tuple[int, str]] = []
    for raw in text.splitlines():
        content = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if content.strip():
            rows.append((len(content) - len(content.lstrip(" ")), content.strip()))
    anchors: dict[str, Any] = {}
    position = 0

    def scalar(token: str) -> Any:
        token = token.strip()
        if token.startswith("[") and token.endswith("]"):
            return [scalar(t) for t in token[1:-1].split(",") if t.strip()]
        if token.startswith("{") and token.endswith("}"):
            pairs = (t.split(":", 1) for t in token[1:-1].split(",") if t.strip())
            return {k.strip(): scalar(v) for k, v in pairs}
        if token[:1] in "\"'":
            assert token[-1] == token[0], token
            return token[1:-1]
        if token in ("true", "false"):
            return token == "true"
        return int(token) if token.isdigit() else token

    def block(indent: int) -> Any:
        nonlocal position
        if rows[position][1].startswith("- "):
            items = []
            while position < len(rows) and rows[position][0] == indent:
                assert rows[position][1].startswith("- "), rows[position]
                items.append(scalar(rows[position][1][2:]))
                position += 1
            return items
        mapping: dict[str, Any] = {}
        while position < len(rows) and rows[position][0] == indent:
            key, colon, rest = rows[position][1].partition(":")
            assert colon and (not rest or rest.startswith(" ")), rows[position]
            rest = rest.strip()
            position += 1
            if key == "<<":
                assert rest.startswith("*"), rest
                mapping = {**anchors[rest[1:]], **mapping}
                continue
            anchor = None
            if rest.startswith("&"):
                anchor, _, rest = rest.partition(" ")
            if rest:
                value = scalar(rest)
            else:
                assert position < len(rows) and rows[position][0] > indent, key
                value = block(rows[position][0])
            if anchor:
                anchors[anchor[1:]] = value
            mapping[key] = value
        return mapping

    document = block(0)
    assert position == len(rows), f"unread line: {rows[position]}"
    return document


# ---- a systemd unit reader -----------------------------------------------------------


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of key -> values in order (a key may repeat; an empty value resets it)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} outside a section"
        key, equals, value = line.partition("=")
        assert equals, f"not a key=value line: {line!r}"
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def _seconds(value: str) -> float:
    """A systemd or compose time span like ``20s``, ``1min 30s`` or ``15``."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return read_unit((DEPLOY / "oswitch.service").read_text())


@pytest.fixture(scope="module")
def compose() -> Any:
    return read_yaml_subset((DEPLOY / "compose.yaml").read_text())


# ---- the Dockerfile ------------------------------------------------------------------


def test_every_stage_builds_on_a_slim_python_the_project_supports(
    dockerfile: tuple[dict[str, str], list[list[Instruction]]],
) -> None:
    """Every build stage starts from a slim official Python image whose version meets
    the project's requires-python."""
    global_args, stages = dockerfile
    assert len(stages) == 2
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(part) for part in required.removeprefix(">=").split("."))
    for stage in stages:
        image = _expand(stage[0].args.split()[0], global_args)
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image)
        assert match, image
        assert (int(match[1]), int(match[2])) >= minimum


def test_the_image_runs_as_a_fixed_unprivileged_user(final_stage: list[Instruction]) -> None:
    """The runtime stage creates a system user with a fixed uid and gid and switches to
    it by number (so runAsNonRoot can verify it); no later USER goes back to root."""
    users = [i for i in final_stage if i.keyword == "USER"]
    assert users, "no USER in the runtime stage"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit() and int(gid) >= 1000
    created: dict[str, str] = {}
    for instruction in final_stage:
        if instruction.keyword == "RUN":
            words = shlex.split(instruction.args)
            for command in ("useradd", "groupadd"):
                if command in words:
                    at = words.index(command)
                    options = words[at + 1 : words.index("&&", at) if "&&" in words[at:] else None]
                    flag = "--uid" if command == "useradd" else "--gid"
                    created[command] = options[options.index(flag) + 1]
    assert created == {"useradd": uid, "groupadd": gid}
    assert final_stage.index(users[-1]) > max(
        final_stage.index(i) for i in final_stage if i.keyword in ("RUN", "COPY")
    )


def test_the_entrypoint_is_oswitch_serve_on_the_mounted_config(
    final_stage: list[Instruction],
) -> None:
    """ENTRYPOINT is exec form (oswitch is PID 1 and gets SIGTERM itself) running
    ``oswitch serve --config /etc/oswitch/oswitch.toml`` from the copied virtualenv,
    and SIGTERM is the stop signal."""
    argv = _only(final_stage, "ENTRYPOINT").exec_form()
    assert argv[0] == "oswitch"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == CONFIG_IN_IMAGE
    path = _env(final_stage)["PATH"].split(":")
    copies = [i.args.split() for i in final_stage if i.keyword == "COPY"]
    venv = next(words[-1] for words in copies if words[0] == "--from=build")
    assert path[0] == f"{venv}/bin"
    assert _only(final_stage, "STOPSIGNAL").args == "SIGTERM"
    assert not [i for i in final_stage if i.keyword == "CMD"]


def test_the_image_exposes_the_ports_of_its_config(final_stage: list[Instruction]) -> None:
    """EXPOSE names the sidecar's and the control channel's ports as the example config
    sets them (8787 and 8788)."""
    config = load_config(DEPLOY / "oswitch.toml")
    exposed = {int(port) for i in final_stage if i.keyword == "EXPOSE" for port in i.args.split()}
    assert exposed == {config.server.port, config.control.port} == {8787, 8788}


async def test_the_healthcheck_passes_against_a_serving_sidecar_and_fails_without_one(
    final_stage: list[Instruction],
) -> None:
    """HEALTHCHECK's exec-form command, run as Docker would with the image's
    OSWITCH_HEALTH_URL pointed at a live sidecar's /healthz, exits 0; with nothing
    listening it exits non-zero. The image's own URL is 127.0.0.1:8787/healthz."""
    health = _only(final_stage, "HEALTHCHECK")
    options, _, command = health.args.partition("CMD ")
    assert {o.partition("=")[0] for o in options.split()} == {
        "--interval",
        "--timeout",
        "--start-period",
        "--retries",
    }
    argv = Instruction(keyword="CMD", args=command, line=health.line).exec_form()
    assert argv[0] == "python"
    argv[0] = sys.executable
    url = _env(final_stage)["OSWITCH_HEALTH_URL"]
    assert url == f"http://127.0.0.1:{ServerConfig().port}/healthz"
    config = load_config(DEPLOY / "oswitch.toml")
    environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with trio.fail_after(30):
        shutdown = trio.Event()
        async with open_switcher(config, transport=FakeProvider().transport()) as switcher:
            async with trio.open_nursery() as nursery:
                serve = partial(
                    serve_sidecar,
                    switcher,
                    host="127.0.0.1",
                    port=0,
                    server=config.server,
                    shutdown_trigger=shutdown,
                )
                port = await nursery.start(serve)
                live = url.replace(":8787/", f":{port}/")
                ok = await trio.run_process(
                    argv,
                    env={**environ, "OSWITCH_HEALTH_URL": live},
                    check=False,
                    capture_stderr=True,
                )
                shutdown.set()
        down = await trio.run_process(
            argv, env={**environ, "OSWITCH_HEALTH_URL": live}, check=False, capture_stderr=True
        )
    assert ok.returncode == 0, ok.stderr
    assert down.returncode != 0


def test_nothing_secret_is_baked_into_the_image(
    dockerfile: tuple[dict[str, str], list[list[Instruction]]],
) -> None:
    """No ENV or ARG carries a key, token or password; COPY takes only the package's
    sources (or the build stage's output); the build context is an allow-list of
    exactly those; and the example env file ships with every value empty."""
    global_args, stages = dockerfile
    names = set(global_args)
    for stage in stages:
        names |= set(_env(stage))
        names |= {i.args.partition("=")[0] for i in stage if i.keyword == "ARG"}
        assert not [i for i in stage if i.keyword == "ADD"]
        for copy in (i for i in stage if i.keyword == "COPY"):
            words = copy.args.split()
            if words[0].startswith("--from="):
                continue
            assert set(words[:-1]) <= {"pyproject.toml", "README.md", "oswitch"}, copy
    assert not [name for name in names if SECRET_NAME.search(name)]
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert {p[1:] for p in ignore if p.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "oswitch/",
    }
    example = (DEPLOY / "oswitch.env.example").read_text().splitlines()
    pairs = [line.partition("=") for line in example if line.strip() and not line.startswith("#")]
    assert pairs and all(sep == "=" and value == "" for _, sep, value in pairs)


# ---- the example config and what refers to it ----------------------------------------


def test_the_example_config_loads_and_binds_publicly_only_with_client_keys() -> None:
    """deploy/oswitch.toml passes load_config; it binds all interfaces only with
    server.api_keys set, keeps the control channel on loopback, names an environment
    variable for every provider key, and the env example lists each of those."""
    config = load_config(DEPLOY / "oswitch.toml")
    assert config.server.host not in LOOPBACK
    assert config.server.api_keys
    assert config.control.host in LOOPBACK and config.control.port is not None
    assert all(t.api_key is None and t.api_key_env for t in config.targets)
    listed = {
        line.partition("=")[0]
        for line in (DEPLOY / "oswitch.env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert config.store is not None and config.store.url_env
    wanted = {t.api_key_env for t in config.targets} | {config.control.token_env}
    assert wanted | {config.store.url_env} == listed


def test_the_compose_example_runs_two_replicas_of_the_image(compose: Any) -> None:
    """compose.yaml runs two services from one image built by deploy/Dockerfile, each
    with the example config mounted read-only where the entrypoint reads it, the env
    file, distinct loopback-only host ports onto the sidecar's port, and a stop grace
    period longer than the config's shutdown grace; both reach one store service by the
    variable the config's [store] names, and that store keeps nothing on disk."""
    config = load_config(DEPLOY / "oswitch.toml")
    services = dict(compose["services"])
    store = services.pop("store")
    assert store["command"][:1] == ["valkey-server"] and "--appendonly" in store["command"]
    assert store["read_only"] is True and store["cap_drop"] == ["ALL"]
    assert config.store is not None and config.store.expected_replicas == 2
    assert sorted(services) == ["oswitch-1", "oswitch-2"]
    host_ports = []
    for service in services.values():
        assert service["environment"] == {config.store.url_env: "redis://store:6379/0"}
        assert service["depends_on"] == ["store"]
        assert service["image"] == "oswitch:local"
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert service["env_file"] == "oswitch.env"
        assert (DEPLOY / "oswitch.env.example").exists()
        (volume,) = service["volumes"]
        source, target, mode = volume.split(":")
        assert (DEPLOY / source).resolve() == DEPLOY / "oswitch.toml"
        assert (target, mode) == (CONFIG_IN_IMAGE, "ro")
        assert _seconds(service["stop_grace_period"]) > config.server.shutdown_grace_ms / 1000
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        (published,) = service["ports"]
        host, port, container = published.split(":")
        assert host == "127.0.0.1" and int(container) == config.server.port
        host_ports.append(port)
    assert len(set(host_ports)) == 2


# ---- the systemd unit ----------------------------------------------------------------


def test_the_unit_runs_serve_reloads_on_hup_and_restarts(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    """ExecStart runs ``oswitch serve`` on /etc/oswitch/oswitch.toml by absolute path,
    ExecReload sends SIGHUP to the main process, failures restart it (but not a bad
    config, exit 2), and stopping waits longer than the config's shutdown grace."""
    service = unit["Service"]
    (start,) = service["ExecStart"]
    argv = shlex.split(start)
    assert argv[0].startswith("/") and argv[0].endswith("/bin/oswitch")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == CONFIG_IN_IMAGE
    assert [shlex.split(v) for v in service["ExecReload"]] == [["/bin/kill", "-HUP", "$MAINPID"]]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"]
    assert service["KillSignal"] == ["SIGTERM"]
    config = load_config(DEPLOY / "oswitch.toml")
    (stop,) = service["TimeoutStopSec"]
    assert _seconds(stop) > config.server.shutdown_grace_ms / 1000
    assert service["EnvironmentFile"] == ["/etc/oswitch/oswitch.env"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_unit_runs_unprivileged_and_hardened(unit: dict[str, dict[str, list[str]]]) -> None:
    """The service runs as its own non-root user with no capabilities, no new
    privileges, a read-only system, no home, private /tmp and devices, IP sockets only."""
    service = unit["Service"]
    assert service["User"] == ["oswitch"] and service["Group"] == ["oswitch"]
    assert "CapabilityBoundingSet" in service and service["CapabilityBoundingSet"] == []
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
    }
    assert {key: service.get(key, [None])[-1] for key in expected} == expected
    assert service["SystemCallFilter"][0] == "@system-service"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` reports nothing about the unit (its ExecStart pointed
    at this environment's oswitch); skipped where systemd-analyze is not installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    oswitch = Path(sys.executable).parent / "oswitch"
    assert oswitch.exists()
    text = (
        (DEPLOY / "oswitch.service").read_text().replace("/opt/oswitch/bin/oswitch", str(oswitch))
    )
    copy = tmp_path / "oswitch.service"
    copy.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
