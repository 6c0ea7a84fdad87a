"""Packages split into small modules keep the public names their single modules had."""

from __future__ import annotations

import importlib

import pytest

# Every public name of the former single-file modules, as users import them.
PUBLIC_NAMES = {
    "oswitch.testing": [
        "Behaviour",
        "Call",
        "FakeProvider",
        "Responder",
        "anthropic_error",
        "anthropic_rate_limited",
        "anthropic_stream",
        "bad_request",
        "completion",
        "connect_error",
        "context_too_long",
        "continuation_of",
        "error",
        "hang",
        "invalid_key",
        "malformed",
        "message",
        "message_reply",
        "model_overloaded",
        "quota_exhausted",
        "rate_limited",
        "reply",
        "serve_fake_provider",
        "server_error",
        "stream",
        "token_count",
    ],
    "bench.report": [
        "CONDITION_COLOURS",
        "CPU_RATIO_TARGET",
        "LEFT",
        "ROUTING_RATIO_TARGET",
        "RSS_TARGET_MB",
        "STYLE",
        "TARGET_COLOURS",
        "WIDTH",
        "RunReport",
        "conditions_svg",
        "latency_svg",
        "overhead_table",
        "overhead_targets",
        "scenario_table",
        "soak_table",
        "summary",
        "targets_table",
        "to_html",
        "to_json",
        "traffic_svg",
        "write_outputs",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC_NAMES))
def test_package_keeps_its_public_names(package: str) -> None:
    """Each public name imports from the package, and ``__all__`` lists exactly them."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC_NAMES[package])
    missing = [name for name in PUBLIC_NAMES[package] if not hasattr(module, name)]
    assert missing == []
