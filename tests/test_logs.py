"""The command line's log formatters: a record written for people keeps its event name."""

from __future__ import annotations

import json
import logging

from oswitch.config import TargetConfig
from oswitch.logs import NdjsonFormatter, TextFormatter
from oswitch.runtime.keys import log as keys_log
from oswitch.runtime.keys import warn_missing_key


def _warnings(*targets: TargetConfig, environ: dict[str, str]) -> list[logging.LogRecord]:
    """The records warn_missing_key logs for ``targets`` under ``environ``."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    keys_log.addHandler(handler)
    try:
        for target in targets:
            warn_missing_key(target, environ)
    finally:
        keys_log.removeHandler(handler)
    return records


def test_key_missing_is_one_event_in_ndjson_and_a_sentence_in_text() -> None:
    """key_missing renders as event "key_missing" with its fields in JSON, and as the
    sentence naming target and variable (then the fields) in text."""
    [record] = _warnings(
        TargetConfig(target_id="openai-work", provider_id="openai", api_key_env="OPENAI_API_KEY"),
        environ={},
    )
    line = json.loads(NdjsonFormatter().format(record))
    assert (line["event"], line["target_id"], line["note"]) == (
        "key_missing",
        "openai-work",
        "OPENAI_API_KEY",
    )
    assert "message" not in line
    text = TextFormatter().format(record)
    assert text.split(" ", 1)[1] == (
        "WARNING oswitch.keys key_missing: target openai-work has no API key: set "
        "OPENAI_API_KEY target_id=openai-work note=OPENAI_API_KEY"
    )


def test_a_disabled_or_keyed_target_logs_nothing() -> None:
    """Only an enabled target whose variable is unset warns."""
    off = TargetConfig(target_id="off", provider_id="openai", api_key_env="X", enabled=False)
    keyed = TargetConfig(target_id="keyed", provider_id="openai", api_key_env="X")
    assert _warnings(off, environ={}) == []
    assert _warnings(keyed, environ={"X": "sk-present"}) == []
