"""The two ways a bench call reaches oswitch: embedded, or over HTTP through the sidecar.

Both turn one chat request into an :class:`~bench.record.Answer` — never raising
for an oswitch error, since counting those is the point. Over the wire, the
sidecar's status codes are mapped back to the error names an embedded caller
sees (503 ``overloaded`` is ``Overloaded``, other 429/502/503/504 answers are
``AllTargetsFailed``, 400 is ``RequestFailed``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import trio

from bench.record import Answer
from oswitch import AllTargetsFailed, Switcher, SwitcherError


class Caller(Protocol):
    """Sends one chat request and reports how it ended."""

    async def call(self, request: Mapping[str, Any], *, stream: bool) -> Answer: ...


def _error_answer(error: SwitcherError, text: str = "") -> Answer:
    error_class = getattr(error, "error_class", None)
    attempts = error.attempts if isinstance(error, AllTargetsFailed) else 0
    return Answer(
        outcome=type(error).__name__,
        error_class=None if error_class is None else str(error_class),
        attempts=attempts,
        text=text,
    )


def _delta_text(chunk: Mapping[str, Any]) -> str:
    choices = chunk.get("choices") or ()
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    content = delta.get("content")
    return content if isinstance(content, str) else ""


class EmbeddedCaller:
    """Calls a :class:`~oswitch.Switcher` in the same trio run."""

    def __init__(self, switcher: Switcher) -> None:
        self.switcher = switcher

    async def call(self, request: Mapping[str, Any], *, stream: bool) -> Answer:
        started = trio.current_time()
        text = ""
        try:
            if not stream:
                reply = await self.switcher.complete(request)
                info = reply.get("oswitch") or {}
                return Answer(
                    outcome="ok",
                    target_id=info.get("target_id"),
                    attempts=int(info.get("attempts") or 0),
                    text=str(reply["choices"][0]["message"].get("content") or ""),
                )
            ttft: float | None = None
            info = {}
            async with self.switcher.stream(request) as chunks:
                async for chunk in chunks:
                    piece = _delta_text(chunk)
                    if piece and ttft is None:
                        ttft = trio.current_time() - started
                    text += piece
                    info = chunk.get("oswitch") or info
            return Answer(
                outcome="ok",
                target_id=info.get("target_id"),
                attempts=int(info.get("attempts") or 0),
                text=text,
                ttft_s=ttft,
            )
        except SwitcherError as error:
            return _error_answer(error, text)


def _wire_error(status: int, payload: object) -> Answer:
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    if status == 503 and kind == "overloaded":
        return Answer(outcome="Overloaded")
    if status in (429, 502, 503, 504):
        error_class = code if isinstance(code, str) and code[:1].isupper() else None
        if status == 502 and error_class == "InterruptedExecution":
            return Answer(outcome="RequestFailed", error_class=error_class)
        return Answer(outcome="AllTargetsFailed", error_class=error_class)
    if status == 400:
        return Answer(outcome="RequestFailed", error_class=code if isinstance(code, str) else None)
    return Answer(outcome=f"HTTP {status}")


class WireCaller:
    """Calls the sidecar's ``/v1/chat/completions`` over a real loopback socket."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, request: Mapping[str, Any], *, stream: bool) -> Answer:
        body = dict(request, stream=stream)
        started = trio.current_time()
        try:
            if not stream:
                response = await self.client.post("/v1/chat/completions", json=body)
                payload = response.json()
                if response.status_code != 200:
                    return _wire_error(response.status_code, payload)
                info = payload.get("oswitch") or {}
                return Answer(
                    outcome="ok",
                    target_id=info.get("target_id"),
                    attempts=int(info.get("attempts") or 0),
                    text=str(payload["choices"][0]["message"].get("content") or ""),
                )
            return await self._stream(body, started)
        except (httpx.HTTPError, ValueError) as error:
            return Answer(outcome=f"client {type(error).__name__}")

    async def _stream(self, body: Mapping[str, Any], started: float) -> Answer:
        text = ""
        ttft: float | None = None
        info: dict[str, Any] = {}
        async with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return _wire_error(response.status_code, response.json())
            done = False
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    failed = _wire_error(502, chunk)
                    return Answer(
                        outcome=f"{failed.outcome} mid-stream",
                        error_class=failed.error_class,
                        text=text,
                    )
                piece = _delta_text(chunk)
                if piece and ttft is None:
                    ttft = trio.current_time() - started
                text += piece
                info = chunk.get("oswitch") or info
        if not done:
            return Answer(outcome="stream ended without [DONE]", text=text)
        return Answer(
            outcome="ok",
            target_id=info.get("target_id"),
            attempts=int(info.get("attempts") or 0),
            text=text,
            ttft_s=ttft,
        )
