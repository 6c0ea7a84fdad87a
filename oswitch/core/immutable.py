"""Immutable records that are cheap to build, for those made on every request.

``@immutable`` is ``@attrs.frozen`` to the type checker (for ``mypy --strict``, which CI
runs over oswitch, it *is* ``attrs.frozen``: an assignment to a field is an error, and
``attrs.evolve`` and converters are checked as usual), and a slotted ``attrs.define``
class at run time, equal values hashing equal as frozen ones do.

The difference is only in the price of ``__init__``: a frozen attrs class must set each
field through ``object.__setattr__`` (its own ``__setattr__`` refuses), about 0.1 µs a
field, where a plain class stores it directly. A plain request builds a dozen such
records (its token estimate and settlements, the upstream call, the response head, the
attempt's outcome and end), and with ``@attrs.frozen`` their construction took ~4 % of
the engine's instructions per request (docs/bench.md, "Run of 4 December, morning").
Snapshots, statistics, config and what a caller is handed (``TargetView``,
``RequestTrace``) stay ``@attrs.frozen``: code mypy does not check reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from attrs import frozen as immutable
else:

    def immutable(maybe_cls: type | None = None, **options: Any) -> Any:
        """``attrs.frozen``'s signature; builds an ``attrs.define`` class (see above)."""
        options.setdefault("unsafe_hash", True)
        return attrs.define(maybe_cls, on_setattr=attrs.setters.NO_OP, **options)


__all__ = ["immutable"]
