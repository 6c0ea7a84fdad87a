"""The responses of oswitch's HTTP/1.1 pool (:mod:`oswitch.transport.pool`): httpx's
types, built and read on a shorter path than httpx's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import trio


def headers_of(fields: list[tuple[bytes, bytes]]) -> httpx.Headers:
    """``fields`` as httpx's header object, built as ``httpx.Headers(fields)`` builds it
    from bytes pairs (raw name, lowered name, value) without its per-field calls: the
    wire module already checked every name and value."""
    headers = httpx.Headers.__new__(httpx.Headers)
    headers._list = [(name, name.lower(), value) for name, value in fields]
    headers._encoding = None
    return headers


class PoolResponse(httpx.Response):
    """A response of this pool: httpx's, with a direct path for a raw body.

    ``aiter_bytes`` of a body sent without a content coding (oswitch asks for none),
    read whole, hands over the pool's body pieces as they come, as httpx's does, but
    without its two generator layers, decoder and chunker; a coded body, a chunk size
    or a response given a request (the transport API) take httpx's own path.
    """

    @classmethod
    def of_pool(
        cls,
        status: int,
        fields: list[tuple[bytes, bytes]],
        stream: httpx.AsyncByteStream,
        *,
        http_version: bytes,
        reason: bytes,
    ) -> PoolResponse:
        """The response ``PoolResponse(status, headers=headers_of(fields), stream=stream,
        extensions=...)`` builds, its attributes set directly: httpx's ``__init__``
        copies the headers again and walks its branches for content given by value
        (2.9 us a response against 0.8). Never raises."""
        response = cls.__new__(cls)
        response.status_code = status
        response.headers = headers_of(fields)
        response._request = None
        response.next_request = None
        response.extensions = {"http_version": http_version, "reason_phrase": reason}
        response.history = []
        response.is_closed = False
        response.is_stream_consumed = False
        response.default_encoding = "utf-8"
        response.stream = stream
        response._num_bytes_downloaded = 0
        return response

    async def aiter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        raw = None if chunk_size is not None else self.claim_raw_body()
        if raw is None:
            async for piece in super().aiter_bytes(chunk_size):
                yield piece
            return
        async for piece in raw:
            self._num_bytes_downloaded += len(piece)
            yield piece
        await self.aclose()

    def claim_raw_body(self) -> httpx.AsyncByteStream | None:
        """The pool's body iterator itself, when ``aiter_bytes`` would hand its pieces
        over unchanged: the response then counts as consumed, and whoever claimed it
        reads it and closes the response. None for a coded body or a response given a
        request (httpx's path). A reader of a whole body saves the async generator (and
        trio's hooks on it) this way. Raises ``StreamConsumed`` or ``StreamClosed`` as
        ``aiter_bytes`` does."""
        if self._request is not None or hasattr(self, "_content") or _coded(self.headers):
            return None
        if self.is_stream_consumed:
            raise httpx.StreamConsumed()
        if self.is_closed:
            raise httpx.StreamClosed()
        self.is_stream_consumed = True
        stream = self.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        return stream

    async def aclose(self) -> None:
        """As httpx's, without its request context when there is no request."""
        if self._request is not None:
            await super().aclose()
            return
        if self.is_closed:
            await trio.lowlevel.cancel_shielded_checkpoint()  # never raises: a close path
            return
        self.is_closed = True
        stream = self.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        await stream.aclose()


def _coded(headers: httpx.Headers) -> bool:
    """Whether the body is sent with a content coding, as httpx's decoder decides it; a
    scan of the lowered names first, since ``Headers.get`` (which lowers and encodes the
    name, then joins every value) cost 2 us a response against 0.2."""
    for _, lowered, _ in headers._list:
        if lowered == b"content-encoding":
            return bool(headers.get("content-encoding", "identity") != "identity")
    return False
