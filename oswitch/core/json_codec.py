"""JSON in and out of oswitch: orjson where it gives the stdlib's answer, the stdlib
where it would not.

orjson (Rust; ~5-10x the stdlib on chat-sized documents) decodes request bodies,
replies and stream chunks, and encodes what oswitch sends. Where the two disagree
the stdlib decides, so every value and every refusal stays exactly as it was:

- orjson refuses what Python's parser reads (``NaN``, ``Infinity``, ``1e999``, an
  escaped lone surrogate, nesting past 1,024): such a document is decoded again by
  ``json.loads``, which reads it (the request check then refuses it, naming its path)
  or raises its own ``ValueError`` / ``RecursionError`` as before;
- orjson reads an integer past 64 bits as a float: a document with a run of 19 or
  more digits (anywhere, strings included: a false alarm only costs the slower
  parse) goes to ``json.loads``, which keeps it an integer;
- orjson refuses to encode a lone surrogate, a non-string key, an integer past 64
  bits or an unknown type (``TypeError``): the stdlib encodes it or raises as before;
- orjson writes a non-finite float as ``null`` where the stdlib would write ``NaN``
  (or raise, with ``allow_nan=False``): no request oswitch encodes upstream can hold
  one (the request check refuses them, naming the path, before any attempt), and in a
  reply relayed to a client ``null`` is valid JSON where ``NaN`` was not.

Encoded bytes are the same JSON value as the stdlib's compact form; only a float's
spelling may differ (orjson writes ``1e-7`` where ``json.dumps`` writes ``1e-07``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# An integer of 19+ digits may not fit orjson's 64 bits (-9223372036854775809 does not).
# Found by mapping every digit to "0" and everything else to " ", then looking for 19
# zeros: two C passes, ~1 us on a stream chunk, where a regex takes 2-4 us (more than
# orjson's whole parse).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19

_orjson_loads = orjson.loads
_orjson_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


def decode(data: bytes | bytearray | memoryview | str) -> Any:
    """``data`` as a JSON value, exactly as ``json.loads`` reads it.

    Raises ``ValueError`` (``json.JSONDecodeError``) for what is not JSON and
    ``RecursionError`` for nesting too deep for the stdlib, as ``json.loads`` does.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    # find, not ``in``: bytes.__contains__ first tries its argument as an integer, and
    # the TypeError it makes and drops costs more than the search itself.
    if raw.translate(_DIGITS_AS_ZEROS).find(_LONG_RUN) < 0:
        try:
            return _orjson_loads(raw)
        except _JSONDecodeError:
            pass  # the stdlib decides: it may read it, or it says why not
    return json.loads(data if isinstance(data, str) else raw)


def encode(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (key order kept, no spaces, non-ASCII as is):
    ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` in UTF-8.

    A non-finite float is written ``null`` (see the module doc); raises
    ``TypeError`` / ``ValueError`` for what cannot be JSON, as the stdlib does.
    """
    try:
        return _orjson_dumps(value)
    except TypeError:
        # A lone surrogate (UnicodeEncodeError, a ValueError), a non-string key, a
        # big integer or an unknown type: the stdlib encodes it or raises as it did.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
