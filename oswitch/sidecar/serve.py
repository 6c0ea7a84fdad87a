"""``oswitch serve``: the engine and the HTTP server under one supervisor.

A lifespan nursery (signals, control channel) surrounds the server; SIGTERM or
SIGINT stops accepting connections, lets requests and streams in flight finish
within ``server.shutdown_grace_ms``, then cancels the rest and exits 0. SIGHUP reads
the config file again and applies it in place (see :mod:`oswitch.sidecar.reload`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from oswitch.config import ServerConfig, SwitcherConfig
from oswitch.control.server import control_token, serve_control
from oswitch.core.secret import Secret
from oswitch.errors import ConfigError
from oswitch.logs import reopen_log_files
from oswitch.otel import SHUTDOWN_TIMEOUT_S, Tracing, open_tracing
from oswitch.runtime.switcher import Switcher, open_switcher
from oswitch.sidecar.app import SidecarApp
from oswitch.sidecar.dashboard import Dashboard
from oswitch.sidecar.listener import ConnectionLimits, HttpSettings, serve_connections
from oswitch.sidecar.reload import reload_from_file

log = logging.getLogger("oswitch.sidecar")

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# Descriptors the process needs besides client and upstream connections (listeners,
# the control channel, log files, the event loop's own).
DESCRIPTOR_HEADROOM = 32


def http_settings(host: str, port: int, server: ServerConfig) -> HttpSettings:
    """The HTTP server's settings for the sidecar: our bind, header timeout (also the
    keep-alive limit between requests) and grace period."""
    return HttpSettings(
        host=host,
        port=port,
        header_timeout_s=server.header_timeout_ms / 1000.0,
        graceful_timeout_s=server.shutdown_grace_ms / 1000.0,
    )


async def serve_sidecar(
    switcher: Switcher,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    server: ServerConfig | None = None,
    shutdown_trigger: trio.Event | None = None,
    dashboard_token: Secret | None = None,
    tracing: Tracing | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the OpenAI-compatible API for ``switcher`` until ``shutdown_trigger`` is set.

    With ``dashboard_token`` (the control token: ``oswitch serve`` passes it whenever
    the control channel is on) ``/dashboard`` is served too, behind that token.
    With ``tracing`` each chat request becomes OpenTelemetry spans (oswitch.otel).

    Reports the bound port through ``task_status`` (pass ``port=0`` to pick a free
    one). Every connection is bounded: ``header_timeout_ms`` to send a request head,
    ``body_timeout_ms`` for its body (408), ``write_timeout_ms`` for each write to it
    (past it the client is disconnected and its request cancelled), and at most
    ``max_connections`` at once (more get 503 at once). Once triggered, new
    connections are refused and requests in flight get ``server.shutdown_grace_ms``
    to finish before they are cancelled; then it returns. Raises OSError when the
    address cannot be bound.
    """
    server = server or ServerConfig()
    if host not in LOOPBACK and not server.api_keys:
        log.warning("unauthenticated_public_bind", extra={"note": f"{host} without api_keys"})
    _ensure_descriptors(server, switcher)
    trigger = shutdown_trigger if shutdown_trigger is not None else trio.Event()
    dashboard = None
    if dashboard_token is not None:
        dashboard = Dashboard(switcher, token=dashboard_token, shutdown=trigger)
    app = SidecarApp(
        switcher,
        api_keys=server.api_keys,
        max_body_bytes=server.max_body_bytes,
        body_timeout_s=server.body_timeout_ms / 1000.0,
        dashboard=dashboard,
        tracing=tracing,
    )
    limits = ConnectionLimits(
        write_timeout_s=server.write_timeout_ms / 1000.0,
        max_connections=server.max_connections,
    )
    async with trio.open_nursery() as nursery:
        bound_port, _ = await nursery.start(
            partial(
                serve_connections,
                app,
                http_settings(host, port, server),
                limits,
                shutdown_trigger=trigger,
            )
        )
        log.info("sidecar_listening", extra={"note": f"http://{host}:{bound_port}"})
        task_status.started(bound_port)


def _ensure_descriptors(server: ServerConfig, switcher: Switcher) -> None:
    """Make room for ``max_connections`` client connections plus every target's pool.

    Past the descriptor limit the accept loop would stall on EMFILE instead of
    refusing with 503, so the soft limit is raised towards what is needed when the
    hard limit allows (as Go's runtime does for every program), logged as
    ``descriptor_limit_raised``; when it cannot be, ``descriptor_limit_low`` is logged.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    upstream = sum(t.concurrency_limit for t in switcher.config.targets)
    needed = server.max_connections + upstream + DESCRIPTOR_HEADROOM
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        else:
            log.info("descriptor_limit_raised", extra={"note": f"ulimit -n {soft} -> {target}"})
    if target < needed:
        log.warning(
            "descriptor_limit_low",
            extra={
                "note": f"ulimit -n is {target}; max_connections {server.max_connections} "
                f"+ {upstream} upstream connections + {DESCRIPTOR_HEADROOM} need {needed}"
            },
        )


async def run_gateway(
    config: SwitcherConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    control_port: int | None = None,
    shutdown: trio.Event | None = None,
    config_path: str | os.PathLike[str] | None = None,
    task_status: trio.TaskStatus[tuple[int, int | None]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run engine, sidecar and (optionally) control channel until shut down.

    ``host``/``port``/``control_port`` override the config. Reports ``(port,
    control_port)`` once listening. Returns after a graceful shutdown, which
    ``shutdown`` (or SIGTERM/SIGINT, when run from the main thread) triggers.
    With ``config_path`` (the file ``config`` was read from), SIGHUP reads it again
    and applies it in place; a bad file changes nothing and is logged (without it,
    SIGHUP keeps its default action). With ``otel.endpoint`` set, requests are
    traced (oswitch.otel) and the spans still queued are sent before it returns.
    Raises ConfigError when a control port is asked for without a token, or tracing
    without the otel extra installed.
    """
    server = config.server
    host = host or server.host
    port = server.port if port is None else port
    control_port = config.control.port if control_port is None else control_port
    token = control_token(config.control)
    if control_port is not None and token is None:
        raise ConfigError(
            [
                (
                    "$.control.token",
                    "the control channel needs a token: set control.token or "
                    f"{config.control.token_env}",
                )
            ]
        )
    shutdown = shutdown if shutdown is not None else trio.Event()
    tracing = open_tracing(config.otel, config=config)
    try:
        await _run(
            config, host, port, control_port, token, shutdown, config_path, tracing, task_status
        )
    finally:
        if tracing is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT_S + 1):
                await trio.to_thread.run_sync(tracing.close, abandon_on_cancel=True)


async def _run(
    config: SwitcherConfig,
    host: str,
    port: int,
    control_port: int | None,
    token: Secret | None,
    shutdown: trio.Event,
    config_path: str | os.PathLike[str] | None,
    tracing: Tracing | None,
    task_status: trio.TaskStatus[tuple[int, int | None]],
) -> None:
    async with open_switcher(config) as switcher, trio.open_nursery() as lifespan:
        reload = None
        if config_path is not None:
            reload = partial(_reload, switcher, config_path, config)
        lifespan.start_soon(_watch_signals, shutdown, reload)
        bound_control: int | None = None
        if control_port is not None:
            assert token is not None
            bound_control = await lifespan.start(
                partial(
                    serve_control,
                    switcher,
                    config.control.host,
                    control_port,
                    token=token,
                    max_message_bytes=config.control.max_message_bytes,
                )
            )
        async with trio.open_nursery() as server_nursery:
            bound = await server_nursery.start(
                partial(
                    serve_sidecar,
                    switcher,
                    host=host,
                    port=port,
                    server=config.server,
                    shutdown_trigger=shutdown,
                    dashboard_token=token if control_port is not None else None,
                    tracing=tracing,
                )
            )
            task_status.started((bound, bound_control))
        log.info("sidecar_stopped")
        lifespan.cancel_scope.cancel()


async def _reload(
    switcher: Switcher, path: str | os.PathLike[str], started: SwitcherConfig
) -> None:
    log.info("config_reload_requested", extra={"note": os.fspath(path)})
    await reload_from_file(switcher, path, started=started)


async def _watch_signals(
    shutdown: trio.Event, reload: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Set ``shutdown`` on SIGTERM/SIGINT; on SIGHUP await ``reload`` (one at a time:
    a SIGHUP arriving meanwhile is handled after it), when one is given; on SIGUSR1
    reopen the audit file (after an outside logrotate moved it)."""
    wanted = [signal.SIGTERM, signal.SIGINT]
    if reload is not None and hasattr(signal, "SIGHUP"):
        wanted.append(signal.SIGHUP)
    if hasattr(signal, "SIGUSR1"):
        wanted.append(signal.SIGUSR1)
    with contextlib.ExitStack() as stack:
        try:
            signals = stack.enter_context(trio.open_signal_receiver(*wanted))
        except RuntimeError:
            # Not the main thread (tests): shutdown comes through the event only.
            await trio.sleep_forever()
        async for signum in signals:
            if reload is not None and signum == getattr(signal, "SIGHUP", None):
                await reload()
                continue
            if signum == getattr(signal, "SIGUSR1", None):
                log.info("log_files_reopened", extra={"note": f"{reopen_log_files()} files"})
                continue
            log.info("shutdown_requested", extra={"note": signal.Signals(signum).name})
            shutdown.set()
            return
