"""The control protocol, sans I/O: frames to typed commands, refusals by path, replies."""

from __future__ import annotations

import enum
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oswitch.control.protocol import (
    OPS,
    TOPICS,
    Auth,
    ErrorCode,
    InspectRequest,
    ListTargets,
    ProtocolError,
    ReloadConfig,
    Subscribe,
    TargetCommand,
    Unsubscribe,
    encode,
    error_reply,
    event_frame,
    ok_reply,
    parse_frame,
    to_json,
    trace_json,
)
from oswitch.core.error_class import ErrorClass
from oswitch.core.secret import Secret
from oswitch.core.trace import AttemptRecord, RequestTrace
from oswitch.runtime import events


def refusal(frame: str | bytes) -> tuple[str, str, Any, tuple[tuple[str, str], ...]]:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(frame)
    error = caught.value
    return str(error.code), error.message, error.id, error.problems


@pytest.mark.parametrize(
    ("frame", "command"),
    [
        ({"op": "auth", "token": "t0k3n"}, Auth(id=None, token=Secret("t0k3n"))),
        ({"id": 7, "op": "list_targets"}, ListTargets(id=7)),
        (
            {"id": "x", "op": "pause_target", "target_id": "a"},
            TargetCommand(id="x", op="pause_target", target_id="a"),
        ),
        (
            {"id": 1, "op": "resume_target", "target_id": "a"},
            TargetCommand(id=1, op="resume_target", target_id="a"),
        ),
        (
            {"id": 1, "op": "drain_target", "target_id": "a"},
            TargetCommand(id=1, op="drain_target", target_id="a"),
        ),
        (
            {"id": 1, "op": "disable_target", "target_id": "a"},
            TargetCommand(id=1, op="disable_target", target_id="a"),
        ),
        (
            {"id": 2, "op": "inspect_request", "request_id": "req_1"},
            InspectRequest(id=2, request_id="req_1"),
        ),
        (
            {"id": 3, "op": "reload_config", "path": "/etc/oswitch.toml"},
            ReloadConfig(id=3, path="/etc/oswitch.toml"),
        ),
        (
            {"id": 3, "op": "reload_config", "config": {"targets": []}},
            ReloadConfig(id=3, config={"targets": []}),
        ),
        ({"id": 4, "op": "subscribe"}, Subscribe(id=4, topics=frozenset({"audit", "targets"}))),
        (
            {"id": 4, "op": "subscribe", "topics": ["targets", "targets"]},
            Subscribe(id=4, topics=frozenset({"targets"})),
        ),
        ({"id": 5, "op": "unsubscribe"}, Unsubscribe(id=5)),
    ],
)
def test_each_op_parses_into_its_command(frame: dict[str, Any], command: object) -> None:
    """Every documented op, with its arguments, becomes its typed command."""
    assert parse_frame(json.dumps(frame)) == command


def test_the_ops_are_the_documented_ten() -> None:
    """The protocol has exactly auth, the seven operator commands and (un)subscribe."""
    assert OPS == (
        "auth",
        "disable_target",
        "drain_target",
        "inspect_request",
        "list_targets",
        "pause_target",
        "reload_config",
        "resume_target",
        "subscribe",
        "unsubscribe",
    )


def test_protocol_topics_match_the_event_hub() -> None:
    """The topics a client may name are exactly those the event hub sorts events into."""
    assert frozenset(TOPICS) == events.TOPICS


def test_an_auth_command_never_shows_its_token() -> None:
    """The parsed token is a Secret: the command's repr hides it."""
    command = parse_frame('{"op": "auth", "token": "hunter2-hunter2"}')
    assert "hunter2" not in repr(command)
    assert isinstance(command, Auth) and command.token.matches("hunter2-hunter2")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            "{not json",
            (
                "bad_json",
                "not valid JSON: Expecting property name enclosed in double "
                "quotes at line 1 column 2",
            ),
        ),
        ("", ("bad_json", "not valid JSON: Expecting value at line 1 column 1")),
        ('{"op": NaN}', ("bad_json", "not valid JSON: NaN is not valid JSON")),
        ('{"id": Infinity}', ("bad_json", "not valid JSON: Infinity is not valid JSON")),
        ("[" * 100_000 + "]" * 100_000, ("bad_json", "not valid JSON: nested too deeply")),
        ('{"id": ' + "9" * 5000 + "}", ("bad_json", "not valid JSON: number too large")),
        ("[]", ("bad_frame", "expected a JSON object (got an array)")),
        ('"list_targets"', ("bad_frame", "expected a JSON object (got a string)")),
        ("null", ("bad_frame", "expected a JSON object (got null)")),
        (b'{"op": "list_targets"}', ("bad_frame", "expected a text frame (got a binary frame)")),
    ],
)
def test_frames_that_are_not_json_objects_are_refused(
    frame: str | bytes, expected: tuple[str, str]
) -> None:
    """Non-JSON, NaN, absurd nesting or numbers, non-objects and binary frames are refused
    with bad_json or bad_frame and no id."""
    code, message, id, _ = refusal(frame)
    assert (code, message, id) == (*expected, None)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (3.5, "expected an integer or a string (got a number)"),
        (True, "expected an integer or a string (got a boolean)"),
        ([1], "expected an integer or a string (got an array)"),
        ({"n": 1}, "expected an integer or a string (got an object)"),
        ("x" * 129, "must be at most 128 characters"),
    ],
)
def test_a_bad_id_is_refused_at_its_path(value: object, reason: str) -> None:
    """An id that is not an integer or a short string is refused at $.id (and not echoed)."""
    assert refusal(json.dumps({"id": value, "op": "list_targets"})) == (
        "bad_argument",
        f"{reason} @ $.id",
        None,
        (("$.id", reason),),
    )


def test_an_unknown_op_lists_the_valid_ones() -> None:
    """An unknown op is refused with unknown_op, naming a typo and listing every valid op."""
    valid = ", ".join(OPS)
    assert refusal('{"id": 1, "op": "list-targets"}') == (
        "unknown_op",
        f'unknown op "list-targets"; valid ops: {valid}',
        1,
        (),
    )
    # A value that is not op-like (it may be a pasted secret) is not echoed.
    assert refusal('{"id": 2, "op": "sk-LIVE 123/456"}')[1] == f"unknown op; valid ops: {valid}"


def test_a_missing_or_mistyped_op_is_refused_at_its_path() -> None:
    """No op, or an op that is not a string, is a bad_argument at $.op."""
    assert refusal('{"id": 1}') == (
        "bad_argument",
        "missing required key @ $.op",
        1,
        (("$.op", "missing required key"),),
    )
    assert refusal('{"id": 1, "op": 5}')[1] == "expected a string (got an integer) @ $.op"


def test_every_argument_problem_is_named_by_path_in_one_refusal() -> None:
    """Unknown keys, missing and mistyped arguments are all listed, sorted, each by path."""
    frame = {"id": 9, "op": "pause_target", "target": "a", "force": True}
    assert refusal(json.dumps(frame)) == (
        "bad_argument",
        "unknown key @ $.force; unknown key @ $.target; missing required key @ $.target_id",
        9,
        (
            ("$.force", "unknown key"),
            ("$.target", "unknown key"),
            ("$.target_id", "missing required key"),
        ),
    )
    assert refusal('{"op": "drain_target", "target_id": 3}')[3] == (
        ("$.target_id", "expected a string (got an integer)"),
    )
    assert refusal('{"op": "inspect_request", "request_id": ""}')[3] == (
        ("$.request_id", "must not be empty"),
    )
    assert refusal('{"op": "auth", "token": null}')[3] == (
        ("$.token", "expected a string (got null)"),
    )
    assert refusal('{"op": "list_targets", "odd key": 1}')[3] == (('$["odd key"]', "unknown key"),)


@pytest.mark.parametrize(
    ("arguments", "problems"),
    [
        ({}, (("$", "missing required key: path or config"),)),
        ({"path": "a.toml", "config": {}}, (("$", "give either path or config, not both"),)),
        ({"path": 7}, (("$.path", "expected a string (got an integer)"),)),
        ({"config": []}, (("$.config", "expected an object (got an array)"),)),
        ({"config": "targets = []"}, (("$.config", "expected an object (got a string)"),)),
    ],
)
def test_reload_config_needs_exactly_one_source(
    arguments: dict[str, Any], problems: tuple[tuple[str, str], ...]
) -> None:
    """reload_config takes a path or an inline config object, never both, never neither."""
    assert refusal(json.dumps({"op": "reload_config", **arguments}))[3] == problems


@pytest.mark.parametrize(
    ("topics", "problem"),
    [
        ([], ("$.topics", "must not be empty (topics: audit, targets)")),
        ("targets", ("$.topics", "expected an array of topics (got a string)")),
        (["targets", "routing"], ("$.topics[1]", "unknown topic (topics: audit, targets)")),
        (["audit", 1], ("$.topics[1]", "expected a string (got an integer)")),
    ],
)
def test_subscribe_topics_are_checked_item_by_item(
    topics: object, problem: tuple[str, str]
) -> None:
    """Subscribe topics must be a non-empty array of known topic names; a bad item is named
    by index."""
    assert refusal(json.dumps({"op": "subscribe", "topics": topics}))[3] == (problem,)


def test_replies_have_the_documented_shapes() -> None:
    """ok and error replies echo the id; problems appear only when there are any."""
    assert json.loads(ok_reply(7, {"targets": []})) == {
        "id": 7,
        "ok": True,
        "result": {"targets": []},
    }
    assert json.loads(error_reply("x", ErrorCode.UNKNOWN_TARGET, "unknown target: 'a'")) == {
        "id": "x",
        "ok": False,
        "error": {"code": "unknown_target", "message": "unknown target: 'a'"},
    }
    assert json.loads(
        error_reply(None, ErrorCode.INVALID_CONFIG, "m", [("$.retry_budget", "bad")])
    )["error"]["problems"] == [{"path": "$.retry_budget", "reason": "bad"}]
    assert json.loads(event_frame("breaker", 12.5, "targets", {"target_id": "a"})) == {
        "event": "breaker",
        "at": 12.5,
        "topic": "targets",
        "fields": {"target_id": "a"},
    }


class _Colour(enum.Enum):
    RED = "red"


@attrs.frozen
class _Inner:
    when: float
    tags: tuple[str, ...]


def test_to_json_makes_plain_strict_json() -> None:
    """Enums become values, tuples and sets arrays, non-finite floats null, attrs objects
    dicts by field, and a Secret that slipped in becomes ***."""
    value = {
        "colour": _Colour.RED,
        "class": ErrorClass.RATE_LIMITED,
        "inner": _Inner(when=math.inf, tags=("a", "b")),
        "set": frozenset({"y", "x"}),
        "nan": math.nan,
        "key": Secret("sk-real-key-123"),
        7: None,
    }
    assert to_json(value) == {
        "colour": "red",
        "class": "RateLimited",
        "inner": {"when": None, "tags": ["a", "b"]},
        "set": ["x", "y"],
        "nan": None,
        "key": "***",
        "7": None,
    }
    assert "sk-real-key-123" not in encode(value)


def test_a_trace_serialises_with_classes_as_strings_and_its_duration() -> None:
    """trace_json gives every attempt field, error classes by name, and duration_s."""
    trace = RequestTrace(
        request_id="r1",
        model="gpt-4o",
        stream=False,
        started_at=100.0,
        ended_at=100.75,
        outcome="ok",
        served_by="b",
        served_model="gpt-4o",
        attempts=(
            AttemptRecord(
                index=0,
                target_id="a",
                model="gpt-4o",
                started_at=100.0,
                duration_s=0.5,
                error_class=ErrorClass.TRANSIENT_SERVER_FAILURE,
                decision="failover",
                status=503,
            ),
        ),
    )
    data = trace_json(trace)
    assert data["duration_s"] == 0.75
    assert data["attempts"][0] == {
        "index": 0,
        "target_id": "a",
        "model": "gpt-4o",
        "started_at": 100.0,
        "duration_s": 0.5,
        "error_class": "TransientServerFailure",
        "decision": "failover",
        "status": 503,
        "retry_after": None,
        "note": "",
        "hedge": False,
        "offset": 0,
        "chars": 0,
        "deadline": "",
    }
    assert json.loads(encode(data)) == data


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=50))
def test_any_frame_parses_or_is_refused_with_a_protocol_error(frame: str | bytes) -> None:
    """Arbitrary text or bytes never raise anything but ProtocolError."""
    try:
        parse_frame(frame)
    except ProtocolError as error:
        assert error.code in set(ErrorCode)
        assert isinstance(error.message, str) and error.message


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {"op": st.sampled_from([*OPS, "nope"]) | _JSON},
        optional={
            "id": _JSON,
            "target_id": _JSON,
            "request_id": _JSON,
            "token": _JSON,
            "path": _JSON,
            "config": _JSON,
            "topics": _JSON,
        },
    )
)
def test_any_object_parses_or_is_refused_with_a_replyable_error(frame: dict[str, Any]) -> None:
    """Any JSON object either parses or is refused with an error whose reply is strict JSON
    and whose id is null, an integer or a string."""
    try:
        parse_frame(json.dumps(frame))
    except ProtocolError as error:
        reply = json.loads(
            error_reply(error.id, error.code, error.message, error.problems),
            parse_constant=lambda name: pytest.fail(f"{name} in a reply"),
        )
        assert reply["id"] is None or isinstance(reply["id"], int | str)
        assert reply["ok"] is False
        for path, _ in error.problems:
            assert path.startswith("$")


@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_encode_always_gives_strict_json(value: object) -> None:
    """Whatever goes into a reply comes out as strict JSON (no NaN or Infinity)."""
    text = encode({"result": value})
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in output"))
    assert text.isascii()


_PROBE = """
import importlib, json, sys, types
for name, sub in (("oswitch", ""), ("oswitch.control", "control")):
    package = types.ModuleType(name)
    package.__path__ = [sys.argv[1] + ("/" + sub if sub else "")]
    sys.modules[name] = package
importlib.import_module("oswitch.control.protocol")
print(json.dumps(sorted(sys.modules)))
"""


def test_the_protocol_module_imports_no_io_library() -> None:
    """oswitch.control.protocol is pure: no trio, websocket or HTTP library gets loaded."""
    package_dir = Path(__file__).resolve().parent.parent / "oswitch"
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, str(package_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert not loaded & {"trio", "trio_websocket", "wsproto", "httpx", "httpcore", "asyncio"}
    assert "oswitch.control.protocol" in loaded
