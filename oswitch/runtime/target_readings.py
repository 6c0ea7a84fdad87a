"""What any task may read of a target, without asking its actor: its state, whether
it is eligible for a model now (and what derives from that: when it is ready, whether
it is busy or rate limited), its token headroom and its candidate for scoring. A mixin
of :class:`~oswitch.runtime.target.TargetActor`, the only writer of what these read;
all synchronous, none blocks or raises.
"""

from __future__ import annotations

from oswitch.config import TargetConfig
from oswitch.core.headroom import Headroom
from oswitch.core.scoring import Candidate
from oswitch.core.target_health import Eligibility, TargetCondition, TargetHealth, TargetState
from oswitch.core.tokens import TokenEstimate
from oswitch.runtime.attempt_tokens import TargetTokens
from oswitch.runtime.exchange import TargetExchange
from oswitch.runtime.inbox import Inbox
from oswitch.runtime.messages import AttemptOrder
from oswitch.runtime.view import target_candidate


class TargetReadings:
    """The read side of a target actor (set up by its ``__init__``)."""

    target: TargetConfig
    _health: TargetHealth
    _tokens: TargetTokens
    _exchange: TargetExchange
    _running: set[AttemptOrder]
    _inbox: Inbox

    @property
    def state(self) -> TargetState:
        return self._health.state

    def serves(self, model: str) -> bool:
        return "*" in self.target.serves or model in self.target.serves

    @property
    def exchange(self) -> TargetExchange:
        """The target's upstream side (its adapter, transport and key), for calls that
        are not attempts (the Messages endpoint's count_tokens)."""
        return self._exchange

    def upstream_model(self, model: str) -> str:
        """The model name sent upstream: the target's own, or the requested one."""
        return self.target.model or model

    @property
    def in_flight(self) -> int:
        """The target's one count of work: attempts holding a slot (running, or a stream
        granted) plus orders not yet taken from the inbox, so requests dispatched in
        the same tick see each other's load (an order being started counts only the
        attempts ahead of it: the inbox is first in, first out)."""
        return len(self._running) + self._inbox.waiting

    def eligibility(self, model: str | None, now: float) -> Eligibility:
        """Whether a new order for ``model`` would find this target eligible at ``now``
        (see :meth:`TargetHealth.eligibility`); every reading below derives from it."""
        return self._health.eligibility(model, now, load=self.in_flight)

    def ready_at(self, model: str, now: float) -> float:
        """When this target can take an attempt for ``model``: ``<= now`` means now,
        ``math.inf`` not by the clock alone (an operator, a slot or a probe must act)."""
        return self.eligibility(model, now).until

    def busy(self, model: str, now: float) -> bool:
        """Out only because its slots (or its half-open probe) are taken: the end of an
        attempt, not the clock or an operator, will make it eligible again."""
        return self.eligibility(model, now).busy

    def rate_limited(self, model: str, now: float) -> bool:
        """Whether this target is out for ``model`` only because a rate limit cools it."""
        return self.eligibility(model, now).rate_limited

    def headroom(self, estimate: TokenEstimate, now: float) -> Headroom:
        """Whether this key's token budgets (configured and learned) let an attempt of
        ``estimate`` go at ``now``, and if not, from when (see :mod:`oswitch.core.headroom`)."""
        return self._tokens.headroom(estimate, now)

    @property
    def tokens_version(self) -> int:
        """Changes whenever :meth:`headroom` may answer otherwise at the same moment."""
        return self._tokens.version

    @property
    def token_limited(self) -> bool:
        """Whether a token budget or a learned view can hold an attempt back here."""
        return self._tokens.limited

    def wants_probe(self, now: float) -> bool:
        """Half-open with a probe slot free: the next request should probe it."""
        return self._health.wants_probe(now)

    def condition(self, now: float) -> TargetCondition:
        return self._health.condition(now)

    def candidate(self, now: float) -> Candidate:
        return target_candidate(self.target, self._health, now, in_flight=self.in_flight)
