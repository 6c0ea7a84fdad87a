"""A request's entry checks, made before any attempt and charging no target: its shape
(the one chat-request validator the sidecar uses too), its id, and whether any target
could ever take its model; and the unknown-model 404 those checks and the end of a
request share."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from oswitch.core.chat_request import (
    CheckedChatRequest,
    chat_request_problems,
    describe,
    request_id_problem,
)
from oswitch.core.clip import clip
from oswitch.core.error_class import ErrorClass
from oswitch.core.trace import TraceBuilder
from oswitch.errors import AllTargetsFailed, RequestFailed, SwitcherError
from oswitch.runtime.keys import keyless_candidates, no_api_key_message
from oswitch.runtime.router import RequestNeeds, Router

# The HTTP status of a request for a model no target serves: OpenAI's own for an
# unknown model (SDKs do not retry a 404, so a typo is not turned into retries).
MODEL_NOT_FOUND_STATUS = 404


class RequestIds:
    """Fresh request ids: ``req_`` and 20 hex digits, 80 bits from a generator seeded
    once per process from the system's randomness (again in a forked child, see
    :func:`new_request_id`). Ids look random to a client (they say nothing of how many
    requests a process served), collide with odds of about n²/2⁸¹ for n ids, and cost
    no syscall: drawing them from ``secrets`` was a ``getrandom`` call per request."""

    __slots__ = ("_bits",)
    _bits: Callable[[int], int]

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """Seed the generator afresh from the system's randomness."""
        self._bits = random.Random(secrets.randbits(128)).getrandbits

    def next(self) -> str:
        """The next id (sync, never blocks)."""
        return f"req_{self._bits(80):020x}"


_request_ids = RequestIds()
os.register_at_fork(after_in_child=_request_ids.reseed)


def new_request_id() -> str:
    """A fresh request id, ``req_`` and 20 lowercase hex digits (:class:`RequestIds`;
    a forked child draws its own)."""
    return _request_ids.next()


def check_request_id(request_id: str) -> None:
    """Raise RequestFailed(InvalidRequest, 400) for an id that is not 1-128 printable
    ASCII characters (ids key the trace store)."""
    problem = request_id_problem(request_id)
    if problem is not None:
        raise RequestFailed(problem, error_class=ErrorClass.INVALID_REQUEST, status=400)


def validate_request(request: object, request_id: str) -> str:
    """Return the request's model, or raise RequestFailed(InvalidRequest, status 400)
    naming every fault by path (the check the sidecar makes too: one validator). A
    request the sidecar already checked (a CheckedChatRequest) is not walked again."""
    if type(request) is CheckedChatRequest:
        return str(request["model"])
    problems = chat_request_problems(request)
    if problems:
        raise RequestFailed(
            describe(problems),
            request_id=request_id,
            error_class=ErrorClass.INVALID_REQUEST,
            status=400,
        )
    assert type(request) is dict or isinstance(request, Mapping)
    return str(request["model"])


def prompt_chars(request: Mapping[str, Any]) -> int:
    """The characters of text in the request's messages (for its trace)."""
    total = 0
    for message in request.get("messages", ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(
                len(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return total


def route_refusal(
    model: str, needs: RequestNeeds, request_id: str, *, router: Router, now: float
) -> SwitcherError | None:
    """Why no target can ever take the request as things stand, or None:

    - no target serves ``model`` and no ``fallbacks`` chain (nor ``"*"``) leads to a
      served one: RequestFailed(InvalidRequest, status 404, OpenAI's wording);
    - every target that could take it lacks its key (ReauthRequired, its key
      variable unset): AllTargetsFailed naming the variables, ``missing_keys`` set.

    The chain and its targets come from the router (:meth:`Router.reachable`, kept
    between requests); the keys and conditions are read now.
    """
    reachable = router.reachable(model, needs)
    if reachable is None:
        return model_not_found(model, request_id=request_id)
    missing = keyless_candidates(reachable, now, os.environ)
    if missing is None:
        return None
    return AllTargetsFailed(
        no_api_key_message(model, missing), request_id=request_id, missing_keys=missing
    )


def model_not_found(model: str, *, request_id: str | None = None) -> RequestFailed:
    """RequestFailed(InvalidRequest, status 404) for a model no target serves, worded
    as OpenAI words it (the name clipped: it is the caller's)."""
    return RequestFailed(
        f"The model `{clip(model)}` does not exist or no target serves it.",
        request_id=request_id,
        error_class=ErrorClass.INVALID_REQUEST,
        status=MODEL_NOT_FOUND_STATUS,
    )


def as_model_not_found(
    trace: TraceBuilder, model: str, request_id: str, error: BaseException
) -> BaseException:
    """``error``, or the unknown-model RequestFailed (404) when it is AllTargetsFailed
    and every attempt was answered 404 as ModelUnavailable: passthrough targets take
    any name, so only their providers can say a model does not exist, and a typo must
    reach the caller as OpenAI's 404 (never retried), not as a 502 it would retry."""
    if not isinstance(error, AllTargetsFailed) or error.deadline_exceeded:
        return error
    attempts = trace.attempts
    if attempts and all(
        a.error_class is ErrorClass.MODEL_UNAVAILABLE and a.status == MODEL_NOT_FOUND_STATUS
        for a in attempts
    ):
        return model_not_found(model, request_id=request_id)
    return error
