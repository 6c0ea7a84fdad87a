"""Settings that are valid one by one but contradict each other or are unsafe.

Pure: a parsed SwitcherConfig in, ``(path, reason)`` warnings out, each path inside
oswitch's own section (the caller places it in the document). Nothing here reads
the environment; keys and the control token are checked by ``oswitch.preflight``.
Every check is listed in docs/configuration.md ("check-config warnings").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from oswitch.config.model import SwitcherConfig, TargetConfig
from oswitch.config.problems import ConfigPath, show


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server on this machine. Raises nothing."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def advise(config: SwitcherConfig) -> list[tuple[ConfigPath, str]]:
    """Every warning about ``config``, in the order of the checks. Raises nothing."""
    return [
        *_deadlines(config),
        *_hedging(config),
        *_exposure(config),
        *_fallbacks(config),
        *_shared_keys(config),
        *_fleet(config),
    ]


def _ms(value: float) -> str:
    return f"{value:g} ms"


def _deadlines(config: SwitcherConfig) -> Iterator[tuple[ConfigPath, str]]:
    deadline = config.request_timeout_ms
    if deadline < config.max_expected_latency_ms:
        yield (
            ("request_timeout_ms",),
            f"shorter than max_expected_latency_ms ({_ms(deadline)} < "
            f"{_ms(config.max_expected_latency_ms)}): a slow non-streamed answer ends the "
            "whole request instead of failing over",
        )
    limits: list[tuple[ConfigPath, float | None, str]] = [
        (("first_token_timeout_ms",), config.first_token_timeout_ms, "silent stream"),
        (("stream_idle_timeout_ms",), config.stream_idle_timeout_ms, "stalled stream"),
    ]
    for index, target in enumerate(config.targets):
        at: ConfigPath = ("targets", index)
        limits.append(
            ((*at, "first_token_timeout_ms"), target.first_token_timeout_ms, "silent stream")
        )
        limits.append(
            ((*at, "stream_idle_timeout_ms"), target.stream_idle_timeout_ms, "stalled stream")
        )
    for path, limit, what in limits:
        if limit is not None and limit >= deadline:
            yield (
                path,
                f"not shorter than request_timeout_ms ({_ms(limit)} >= {_ms(deadline)}): a "
                f"{what} is never abandoned for another target; the request times out first",
            )


def _hedging(config: SwitcherConfig) -> Iterator[tuple[ConfigPath, str]]:
    hedge = config.hedge_after_ms
    if hedge is None:
        return
    if config.failover_budget == 0:
        yield (
            ("hedge_after_ms",),
            "no hedge can start: each hedge spends one of failover_budget, which is 0",
        )
    elif hedge >= config.request_timeout_ms:
        yield (
            ("hedge_after_ms",),
            f"not shorter than request_timeout_ms ({_ms(hedge)} >= "
            f"{_ms(config.request_timeout_ms)}): no hedge ever starts",
        )


def _exposure(config: SwitcherConfig) -> Iterator[tuple[ConfigPath, str]]:
    server, control = config.server, config.control
    if not is_loopback(server.host) and not server.api_keys:
        yield (
            ("server", "host"),
            f"{show(server.host)} is reachable from other machines and server.api_keys is "
            "empty: anyone who reaches it spends your providers' keys (set server.api_keys, "
            'or bind "127.0.0.1")',
        )
    if control.port is not None and not is_loopback(control.host):
        yield (
            ("control", "host"),
            f"the control channel on {show(control.host)} is plain ws://: its token crosses "
            'the network in clear (bind "127.0.0.1" and reach it through an SSH tunnel)',
        )


def _serves(target: TargetConfig, model: str) -> bool:
    return "*" in target.serves or model in target.serves


def _fallbacks(config: SwitcherConfig) -> Iterator[tuple[ConfigPath, str]]:
    for model, chain in config.fallbacks.items():
        for index, fallback in enumerate(chain):
            if not any(_serves(target, fallback) for target in config.targets):
                yield (("fallbacks", model, index), f"no target serves {show(fallback)}")


def _key_of(target: TargetConfig) -> object:
    """What identifies the credential a target sends (None: it sends none)."""
    if target.api_key is not None:
        return target.api_key  # hashable and compared in constant time, never shown
    if target.api_key_env is not None:
        return ("env", target.api_key_env)
    return None


def _shared_keys(config: SwitcherConfig) -> Iterator[tuple[ConfigPath, str]]:
    # Providers limit a key (per model), so two targets sending the same key to the
    # same endpoint for the same models are one rate limit: failing over from one
    # to the other after a 429 only meets the same 429.
    first: dict[tuple[object, ...], int] = {}
    for index, target in enumerate(config.targets):
        key = _key_of(target)
        if key is None or not target.enabled:
            continue
        for model in target.serves:
            identity = (target.base_url, key, target.model, model)
            if identity in first:
                earlier = config.targets[first[identity]]
                field = "api_key" if target.api_key is not None else "api_key_env"
                yield (
                    ("targets", index, field),
                    f"same key, endpoint and model as {show(earlier.target_id)}: the two share "
                    "one rate limit, so failing over between them gains nothing",
                )
                break
            first[identity] = index


def _fleet(config: SwitcherConfig) -> Iterator[tuple[ConfigPath, str]]:
    store = config.store
    if store is not None and store.on_store_error == "local" and store.expected_replicas == 1:
        yield (
            ("store", "expected_replicas"),
            "is 1: while the store is unreachable every replica enforces each whole limit, "
            "so a fleet of N sends up to N times it; set it to the number of replicas",
        )
