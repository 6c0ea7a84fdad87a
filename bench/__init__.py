"""oswitch's bench harness: fault scenarios, overhead figures and a soak, keyless.

Run ``python -m bench`` (``--help`` for the options). Modules: ``scenarios`` (the
seven fault scenarios and their expectations), ``harness`` (running one, in virtual
time or over the wire), ``faults`` (fault scripts beyond ``oswitch.testing``),
``overhead`` (oswitch vs a bare httpx call), ``soak``, ``upstream`` (the fake
upstream as a server process), ``record`` and ``report`` (figures, JSON, HTML).
"""
