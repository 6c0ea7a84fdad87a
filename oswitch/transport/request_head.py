"""Request heads for oswitch's HTTP/1.1 client, without I/O: the request line, Host,
the caller's fields and oswitch's defaults, validated once per distinct head.

The response side, and the errors both raise, are in :mod:`oswitch.transport.wire`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from oswitch.transport.wire import NOT_IN_FIELD_VALUE, LocalProtocolError, is_token

USER_AGENT = b"oswitch"
_NOT_IN_VALUE = re.compile(b"[" + re.escape(NOT_IN_FIELD_VALUE) + b"]")
_NOT_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")


def encode_request_head(
    method: bytes,
    target: bytes,
    host: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    content_length: int,
) -> bytes:
    """The head of a request with a body of ``content_length`` bytes.

    ``headers`` must not hold Host, Content-Length or Transfer-Encoding (added or
    never sent here); ``user-agent: oswitch`` and ``accept-encoding: identity`` (bodies
    are read raw) are added unless given. Raises :class:`LocalProtocolError` naming
    the offending header, never repeating its value (it may be a key).
    """
    return request_head_fields(method, target, host, headers) + content_length_field(content_length)


def request_head_fields(
    method: bytes, target: bytes, host: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """A request head up to its Content-Length: request line, Host, ``headers`` and the
    defaults, validated as :func:`encode_request_head` says. A target sends the same
    ones request after request, so its pool keeps them (validating costs ~10 us)."""
    if not is_token(method) or _NOT_IN_TARGET.search(target) or _NOT_IN_TARGET.search(host):
        raise LocalProtocolError("invalid request line or host")
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    given: set[bytes] = set()
    for name, value in headers:
        if _NOT_IN_VALUE.search(value) or not is_token(name):
            raise LocalProtocolError(f"invalid request header {name!r}")
        given.add(name.lower())
        parts += (name, b": ", value, b"\r\n")
    if b"user-agent" not in given:
        parts += (b"user-agent: ", USER_AGENT, b"\r\n")
    if b"accept-encoding" not in given:
        parts += (b"accept-encoding: identity\r\n",)
    return b"".join(parts)


def content_length_field(content_length: int) -> bytes:
    """The Content-Length line and the blank line that end a request head."""
    return b"content-length: %d\r\n\r\n" % content_length
