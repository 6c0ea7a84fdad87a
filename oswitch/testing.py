"""Fake providers for testing code that uses oswitch — no network, no keys.

``FakeProvider`` is a scripted upstream behind ``httpx.MockTransport``. Each route
(an API key, or a host for keyless targets) plays a list of behaviours in order,
the last one repeating. Latency runs on trio's clock, so under
``trio.testing.MockClock`` a 30-second hang costs no real time::

    fake = FakeProvider()
    fake.on("key-a", rate_limited(retry_after=2.0), reply("hello"))
    fake.on("key-b", server_error())
    async with open_switcher(config, transport=fake.transport()) as switcher:
        ...
    assert fake.calls_to("key-a") == 2
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx
import trio

Responder = Callable[[httpx.Request, Mapping[str, Any]], Awaitable[httpx.Response]]


@attrs.frozen(kw_only=True)
class Behaviour:
    """One scripted answer: wait ``latency`` seconds, then ``respond``."""

    name: str
    respond: Responder
    latency: float = 0.0


@attrs.frozen(kw_only=True)
class Call:
    """A request the fake received (the route label, never the key's position in a header)."""

    route: str
    path: str
    model: str | None
    body: Mapping[str, Any]
    at: float
    behaviour: str


def completion(text: str, *, model: str, finish_reason: str = "stop") -> dict[str, Any]:
    """An OpenAI chat.completion body answering ``text``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": max(1, len(text) // 4),
            "total_tokens": 1 + max(1, len(text) // 4),
        },
    }


def reply(text: str = "ok", *, latency: float = 0.0, model: str | None = None) -> Behaviour:
    """Answer 200 with ``text`` (the reply's model is ``model`` or the one asked for)."""

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "fake-model")
        return httpx.Response(200, json=completion(text, model=served))

    return Behaviour(name="reply", respond=respond, latency=latency)


def error(
    status: int,
    body: Mapping[str, Any] | str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    latency: float = 0.0,
    name: str | None = None,
) -> Behaviour:
    """Answer ``status`` with ``body`` (JSON when a mapping) and ``headers``."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        if isinstance(body, Mapping):
            return httpx.Response(status, json=dict(body), headers=dict(headers or {}))
        return httpx.Response(status, text=body or "", headers=dict(headers or {}))

    return Behaviour(name=name or f"error {status}", respond=respond, latency=latency)


def _openai_error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def rate_limited(retry_after: float | None = 1.0, *, latency: float = 0.0) -> Behaviour:
    """429 rate limit, with ``retry-after-ms`` when ``retry_after`` is given."""
    headers = {} if retry_after is None else {"retry-after-ms": str(int(retry_after * 1000))}
    return error(
        429,
        _openai_error(
            "Rate limit reached for requests per min (RPM).", "requests", "rate_limit_exceeded"
        ),
        headers=headers,
        latency=latency,
        name="rate_limited",
    )


def quota_exhausted() -> Behaviour:
    """429 insufficient_quota: the key's billing quota is gone."""
    return error(
        429,
        _openai_error(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        name="quota_exhausted",
    )


def invalid_key() -> Behaviour:
    """401 invalid API key."""
    return error(
        401,
        _openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        name="invalid_key",
    )


def server_error(status: int = 500, *, latency: float = 0.0) -> Behaviour:
    """A 5xx from the provider."""
    return error(
        status,
        _openai_error(
            "The server had an error while processing your request.", "server_error", None
        ),
        latency=latency,
        name=f"server_error {status}",
    )


def model_overloaded() -> Behaviour:
    """529 overloaded_error, as Anthropic sends when a model is overloaded."""
    return error(
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        name="model_overloaded",
    )


def bad_request(message: str = "Invalid 'messages': empty array.") -> Behaviour:
    """400 invalid_request_error caused by the request itself."""
    return error(400, _openai_error(message, "invalid_request_error", None), name="bad_request")


def context_too_long() -> Behaviour:
    """400 context_length_exceeded."""
    return error(
        400,
        _openai_error(
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        name="context_too_long",
    )


def malformed(latency: float = 0.0) -> Behaviour:
    """200 with a body that is not JSON."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(200, text="<html>upstream proxy error</html>")

    return Behaviour(name="malformed", respond=respond, latency=latency)


def hang() -> Behaviour:
    """Never answer (until cancelled)."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    return Behaviour(name="hang", respond=respond)


def connect_error() -> Behaviour:
    """Refuse the connection, as a provider that is down does."""

    async def respond(request: httpx.Request, _: Mapping[str, Any]) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return Behaviour(name="connect_error", respond=respond)


@attrs.define
class _Script:
    behaviours: list[Behaviour]
    position: int = 0

    def next(self) -> Behaviour:
        behaviour = self.behaviours[min(self.position, len(self.behaviours) - 1)]
        self.position += 1
        return behaviour


@attrs.define
class _Phases:
    """Behaviours by time since the fake was created: ``[(until_s, behaviour), ...]``."""

    phases: list[tuple[float, Behaviour]]
    origin: float

    def next(self) -> Behaviour:
        elapsed = trio.current_time() - self.origin
        for until, behaviour in self.phases:
            if elapsed < until:
                return behaviour
        return self.phases[-1][1]


class FakeProvider:
    """A scripted OpenAI-compatible upstream for ``httpx.MockTransport``.

    A request is matched to a route by its key (``Authorization: Bearer`` or
    ``x-api-key``), else by its host. Unmatched requests get 404 with a message
    naming the route, so a typo in a test fails loudly.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Script | _Phases] = {}
        self.calls: list[Call] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0  # answers cut short by a cancelled (abandoned) attempt
        self.closed_early = 0  # streamed bodies the client closed before their end
        self.open_streams = 0
        self.max_open_streams = 0

    def on(self, route: str, *behaviours: Behaviour) -> FakeProvider:
        """Play ``behaviours`` in order for ``route`` (a key or host); the last repeats."""
        if not behaviours:
            raise ValueError("on() needs at least one behaviour")
        self._routes[route] = _Script(list(behaviours))
        return self

    def phases(self, route: str, phases: Sequence[tuple[float, Behaviour]]) -> FakeProvider:
        """For ``route``, answer with each behaviour until its time (seconds since now)."""
        if not phases:
            raise ValueError("phases() needs at least one phase")
        self._routes[route] = _Phases(list(phases), trio.current_time())
        return self

    def calls_to(self, route: str) -> int:
        return sum(1 for call in self.calls if call.route == route)

    def transport(self) -> httpx.MockTransport:
        """The transport to pass to ``open_switcher(config, transport=...)``."""
        return httpx.MockTransport(self.handle)

    def _route_of(self, request: httpx.Request) -> str:
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        if key and key in self._routes:
            return str(key)
        return str(request.url.host)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request by its route's script (the MockTransport handler)."""
        route = self._route_of(request)
        script = self._routes.get(route)
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if script is None:
            return httpx.Response(
                404, json={"error": {"message": f"no fake route for {route!r}", "type": "fake"}}
            )
        behaviour = script.next()
        self.calls.append(
            Call(
                route=route,
                path=request.url.path,
                model=body.get("model"),
                body=body,
                at=trio.current_time(),
                behaviour=behaviour.name,
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if behaviour.latency > 0 and not math.isinf(behaviour.latency):
                await trio.sleep(behaviour.latency)
            response = await behaviour.respond(request, body)
            if isinstance(response.stream, _PlayedBody):
                response.stream.provider = self
            return response
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


# ---- streamed answers ------------------------------------------------------------


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def continuation_of(body: Mapping[str, Any]) -> tuple[str, bool] | None:
    """If ``body`` asks to continue a cut answer: ``(confirmed text, prefilled)``.

    Understands both forms oswitch sends (assistant prefill, or an assistant turn
    plus an instruction), in OpenAI and Anthropic message shapes.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict):
        return None
    if last.get("role") == "assistant":
        return _message_text(last), True
    if (
        len(messages) >= 2
        and isinstance(messages[-2], dict)
        and messages[-2].get("role") == "assistant"
        and "Continue it exactly" in _message_text(last)
    ):
        return _message_text(messages[-2]), False
    return None


def _pieces(text: str, size: int) -> list[str]:
    words = text.split(" ")
    pieces: list[str] = []
    for start in range(0, len(words), size):
        piece = " ".join(words[start : start + size])
        if start + size < len(words):
            piece += " "
        pieces.append(piece)
    return [p for p in pieces if p]


def _sse(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


@attrs.frozen(kw_only=True)
class _StreamScript:
    text: str
    api: str
    words_per_chunk: int
    chunk_latency: float
    cut_after: int | None
    reset_after: int | None
    stall_after: int | None
    malformed_at: int | None
    error_after: int | None
    error_type: str
    no_terminator: bool
    repeat: str
    tool_call: Mapping[str, str] | None
    split_bytes: int
    ping_every: int | None
    model: str | None


def _answer_for(script: _StreamScript, body: Mapping[str, Any]) -> str:
    continued = continuation_of(body)
    if continued is None:
        return script.text
    confirmed, _ = continued
    start = len(confirmed)
    if script.repeat == "all":
        return script.text
    if script.repeat.startswith("tail:"):
        start = max(0, start - int(script.repeat[5:]))
    return script.text[start:]


def _openai_events(script: _StreamScript, pieces: list[str], model: str) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )
        )

    events = [chunk({"role": "assistant", "content": ""})]
    if script.tool_call is not None:
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_fake",
                            "type": "function",
                            "function": {"name": script.tool_call["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in pieces:
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        events.append(chunk({}, "tool_calls"))
    else:
        events.extend(chunk({"content": piece}) for piece in pieces)
        events.append(chunk({}, "stop"))
    return events


def _anthropic_events(script: _StreamScript, pieces: list[str], model: str) -> list[bytes]:
    def event(kind: str, payload: dict[str, Any]) -> bytes:
        return _sse(json.dumps({"type": kind, **payload}), kind)

    events = [
        event(
            "message_start",
            {
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                }
            },
        )
    ]
    if script.tool_call is not None:
        events.append(
            event(
                "content_block_start",
                {
                    "index": 0,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_fake",
                        "name": script.tool_call["name"],
                        "input": {},
                    },
                },
            )
        )
        for piece in pieces:
            events.append(
                event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
            )
        stop_reason = "tool_use"
    else:
        events.append(
            event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
        )
        for piece in pieces:
            events.append(
                event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "text_delta", "text": piece}},
                )
            )
        stop_reason = "end_turn"
    events.append(event("content_block_stop", {"index": 0}))
    events.append(
        event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        )
    )
    return events


def stream(
    text: str = "The quick brown fox jumps over the lazy dog.",
    *,
    api: str = "openai",
    latency: float = 0.0,
    chunk_latency: float = 0.0,
    words_per_chunk: int = 1,
    cut_after: int | None = None,
    reset_after: int | None = None,
    stall_after: int | None = None,
    malformed_at: int | None = None,
    error_after: int | None = None,
    error_type: str = "overloaded_error",
    no_terminator: bool = False,
    repeat: str = "none",
    tool_call: Mapping[str, str] | None = None,
    split_bytes: int = 7,
    ping_every: int | None = None,
    model: str | None = None,
) -> Behaviour:
    """Stream ``text`` as SSE (OpenAI chunks, or Anthropic events with ``api="anthropic"``).

    Content chunks are counted from 1. ``cut_after=K`` closes the body after K of them
    (no terminator); ``reset_after=K`` breaks the connection; ``stall_after=K`` goes
    silent; ``malformed_at=K`` sends chunk K as broken JSON; ``error_after=K`` sends a
    provider ``error`` event (``error_type``); ``no_terminator`` drops ``[DONE]`` /
    ``message_stop``. Asked to continue a cut answer, it streams the rest of ``text``,
    repeating the last N characters with ``repeat="tail:N"`` or all of it with
    ``repeat="all"``. ``tool_call={"name": ..}`` streams ``text`` as the call's
    arguments. ``ping_every=N`` adds a ping after every N chunks. The bytes are cut
    every ``split_bytes`` bytes, as TCP may deliver them.
    """
    script = _StreamScript(
        text=text,
        api=api,
        words_per_chunk=words_per_chunk,
        chunk_latency=chunk_latency,
        cut_after=cut_after,
        reset_after=reset_after,
        stall_after=stall_after,
        malformed_at=malformed_at,
        error_after=error_after,
        error_type=error_type,
        no_terminator=no_terminator,
        repeat=repeat,
        tool_call=tool_call,
        split_bytes=split_bytes,
        ping_every=ping_every,
        model=model,
    )

    async def respond(request: httpx.Request, body: Mapping[str, Any]) -> httpx.Response:
        served = model or str(body.get("model") or "fake-model")
        answer = _answer_for(script, body)
        pieces = _pieces(answer, script.words_per_chunk) if answer else []
        builder = _anthropic_events if api == "anthropic" else _openai_events
        events = builder(script, pieces, served)
        header = 2 if (api == "anthropic" or tool_call is not None) else 1
        trailer = 2 if api == "anthropic" else 1
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=_PlayedBody(_play(script, events, range(header, len(events) - trailer))),
        )

    return Behaviour(name="stream", respond=respond, latency=latency)


async def _play(script: _StreamScript, events: list[bytes], content: range) -> Any:
    """Yield the stream's bytes, split every ``split_bytes``, acting out the faults."""
    pending = b""
    content_index = 0
    for position, raw in enumerate(events):
        is_content = position in content
        if is_content and content_index == 0 and 0 in (script.cut_after, script.stall_after):
            # Faults "after 0 chunks": the provider dies before any content.
            if pending:
                yield pending
            if script.stall_after == 0:
                await trio.sleep_forever()
            return
        if is_content:
            content_index += 1
            if script.malformed_at == content_index:
                raw = b'data: {"choices": [{"delta": {"content": "bro\n\n'
            if script.chunk_latency:
                await trio.sleep(script.chunk_latency)
        pending += raw
        if script.ping_every and is_content and content_index % script.ping_every == 0:
            pending += (
                _sse('{"type": "ping"}', "ping") if script.api == "anthropic" else b": ping\n\n"
            )
        while len(pending) >= script.split_bytes:
            yield pending[: script.split_bytes]
            pending = pending[script.split_bytes :]
        if not is_content:
            continue
        if script.error_after == content_index:
            if script.api == "anthropic":
                error_event = {
                    "type": "error",
                    "error": {"type": script.error_type, "message": "Overloaded"},
                }
                yield pending + _sse(json.dumps(error_event), "error")
            else:
                error_event = {
                    "error": {
                        "message": "The server had an error",
                        "type": "server_error",
                        "code": None,
                    }
                }
                yield pending + _sse(json.dumps(error_event))
            return
        if script.cut_after == content_index:
            if pending:
                yield pending
            return
        if script.reset_after == content_index:
            if pending:
                yield pending
            raise httpx.ReadError("connection reset by peer")
        if script.stall_after == content_index:
            if pending:
                yield pending
            await trio.sleep_forever()
    if not script.no_terminator:
        pending += (
            _sse("[DONE]")
            if script.api == "openai"
            else _sse('{"type": "message_stop"}', "message_stop")
        )
    if pending:
        yield pending


class _PlayedBody(httpx.AsyncByteStream):
    """A streamed fake body that tells its provider how it ended (read, cancelled,
    or closed early by the client), as a real connection would be seen to end."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.provider: FakeProvider | None = None
        self._open = False
        self._ended = False

    async def __aiter__(self) -> Any:
        provider = self.provider
        if provider is not None:
            provider.open_streams += 1
            provider.max_open_streams = max(provider.max_open_streams, provider.open_streams)
        self._open = True
        try:
            async for piece in self._source:
                yield piece
            self._ended = True
        except trio.Cancelled:
            self._ended = True
            if provider is not None:
                provider.cancelled += 1
            raise
        finally:
            self._release()

    def _release(self) -> None:
        if self._open and self.provider is not None:
            self.provider.open_streams -= 1
        self._open = False

    async def aclose(self) -> None:
        if not self._ended and self.provider is not None:
            self._ended = True
            self.provider.closed_early += 1
        self._release()
        await self._source.aclose()


# ---- the same scripts over a real loopback socket ---------------------------------


class _FakeProviderApp:
    """ASGI bridge: serves a FakeProvider's scripts over real HTTP."""

    def __init__(self, fake: FakeProvider) -> None:
        self._fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        host, port = scope["server"] or ("127.0.0.1", 80)
        query = scope.get("query_string", b"").decode()
        url = f"http://{host}:{port}{scope['path']}" + (f"?{query}" if query else "")
        request = httpx.Request(
            scope["method"], url, headers=[(k, v) for k, v in scope["headers"]], content=body
        )
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            response = await self._fake.handle(request)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding")
                    ],
                }
            )
            body_stream = response.stream
            if isinstance(body_stream, _PlayedBody):
                try:
                    async for piece in body_stream:
                        await send({"type": "http.response.body", "body": piece, "more_body": True})
                finally:
                    await body_stream.aclose()
            else:
                content = await response.aread()
                await send({"type": "http.response.body", "body": content, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


async def serve_fake_provider(
    fake: FakeProvider,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fake``'s scripts over HTTP on ``host:port`` until cancelled.

    Reports the bound port through ``task_status`` (port 0 picks a free one), so a
    target's ``base_url`` can be ``f"http://127.0.0.1:{port}/v1"``. A behaviour that
    breaks the connection (``stream(reset_after=...)``) aborts it for real.
    """
    import hypercorn
    import hypercorn.trio

    config = hypercorn.Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            functools.partial(hypercorn.trio.serve, _FakeProviderApp(fake), config)
        )
        task_status.started(int(str(binds[0]).rsplit(":", 1)[1]))
