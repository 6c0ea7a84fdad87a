"""Which targets may take a request: the model index and the request's needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from oswitch.core.ledger import model_chain
from oswitch.runtime.target import TargetActor, TargetState


@attrs.frozen(kw_only=True, cache_hash=True)
class RequestNeeds:
    """What a request asks of a target, read once from the request dict.

    ``capabilities``: always ``chat``; ``tools`` when it carries tools or tool
    results; ``vision`` when a message has an image part. ``require_tags`` and
    ``avoid_tags`` come from the request's own ``"oswitch"`` object.
    """

    capabilities: frozenset[str]
    require_tags: frozenset[str] = frozenset()
    avoid_tags: frozenset[str] = frozenset()

    def admits(self, actor: TargetActor) -> bool:
        target = actor.target
        if target.capabilities is not None and not self.capabilities <= set(target.capabilities):
            return False
        tags = set(target.policy_tags)
        return self.require_tags <= tags and not (self.avoid_tags & tags)


_NO_TAGS: frozenset[str] = frozenset()


def _tags(options: Mapping[str, Any], key: str) -> frozenset[str]:
    value = options.get(key)
    if value is None:
        return _NO_TAGS
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(str(v) for v in value) if isinstance(value, list | tuple) else _NO_TAGS


# What a plain chat request needs: one shared value (its hash kept), so the router's
# pool cache finds it without hashing new sets.
CHAT_ONLY = RequestNeeds(capabilities=frozenset({"chat"}))
_IMAGE_PART_TYPES = ("image_url", "image")


def request_needs(request: Mapping[str, Any]) -> RequestNeeds:
    """Read what ``request`` needs of a target (see :class:`RequestNeeds`)."""
    tools = bool(request.get("tools") or request.get("functions"))
    vision = False
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            if message.get("role") == "tool" or message.get("tool_calls"):
                tools = True
            content = message.get("content")
            if isinstance(content, list):
                vision = vision or any(
                    isinstance(part, dict) and part.get("type") in _IMAGE_PART_TYPES
                    for part in content
                )
    options = request.get("oswitch")
    if options is None or not isinstance(options, Mapping):
        options = {}
    require_tags = _tags(options, "require_tags")
    avoid_tags = _tags(options, "avoid_tags")
    if not (tools or vision or require_tags or avoid_tags):
        return CHAT_ONLY
    capabilities = {"chat"}
    if tools:
        capabilities.add("tools")
    if vision:
        capabilities.add("vision")
    return RequestNeeds(
        capabilities=frozenset(capabilities), require_tags=require_tags, avoid_tags=avoid_tags
    )


# How many pools (model × request needs) a router remembers before starting over. Keys
# hold only names the router knows (served models, targets' tags), never a caller's
# arbitrary string, so the cache is bounded in bytes as well as in entries.
POOL_CACHE_SIZE = 256


@attrs.frozen(kw_only=True)
class Pool:
    """The targets that may serve one model for one kind of request, and their tiers
    (highest ``operator_priority`` first)."""

    actors: tuple[TargetActor, ...]
    tiers: tuple[tuple[TargetActor, ...], ...]


def make_pool(actors: Sequence[TargetActor]) -> Pool:
    by_tier: dict[int, list[TargetActor]] = {}
    for actor in actors:
        by_tier.setdefault(actor.target.operator_priority, []).append(actor)
    tiers = tuple(tuple(by_tier[tier]) for tier in sorted(by_tier, reverse=True))
    return Pool(actors=tuple(actors), tiers=tiers)


class Router:
    """Targets indexed by the model names they serve, so a request never walks all."""

    def __init__(
        self, actors: Iterable[TargetActor], *, fallbacks: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.actors: dict[str, TargetActor] = {}
        self._by_model: dict[str, list[TargetActor]] = {}
        self._any_model: list[TargetActor] = []
        self._fallbacks: Mapping[str, Sequence[str]] = fallbacks or {}
        self._pools: dict[tuple[str | None, RequestNeeds], Pool] = {}
        self._reachable: dict[tuple[str | None, RequestNeeds], tuple[TargetActor, ...] | None] = {}
        self._tags: frozenset[str] = frozenset()
        for actor in actors:
            self.actors[actor.target_id] = actor
            self._tags |= frozenset(actor.target.policy_tags)
            serves = actor.target.serves
            if "*" in serves:
                self._any_model.append(actor)
            else:
                for model in serves:
                    self._by_model.setdefault(model, []).append(actor)

    def candidates(self, model: str) -> Sequence[TargetActor]:
        """Every target serving ``model``, whatever its state."""
        named = self._by_model.get(model)
        if not self._any_model:
            return named or ()
        return [*(named or ()), *self._any_model]

    def pool(self, model: str, needs: RequestNeeds) -> Pool:
        """The targets serving ``model`` that admit ``needs``, grouped in tiers (cached:
        a router is rebuilt whenever its targets change)."""
        known_needs = self._known_needs(needs)
        if known_needs is None:
            return _EMPTY_POOL  # a tag no target has: nothing can take it
        needs = known_needs
        # A model not served by name has the passthrough targets only, whatever its name.
        key = (model if model in self._by_model else None, needs)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= POOL_CACHE_SIZE:
                self._pools.clear()
            pool = make_pool([a for a in self.candidates(model) if needs.admits(a)])
            self._pools[key] = pool
        return pool

    def reachable(self, model: str, needs: RequestNeeds) -> tuple[TargetActor, ...] | None:
        """The targets a request for ``model`` with ``needs`` could ever be sent to: the
        pools of ``model`` and of its ``fallbacks`` chain, each target once, in chain
        order; None when no target serves any model of the chain. Cached as
        :meth:`pool` is: every name neither served by name nor a ``fallbacks`` source
        shares one entry, and tags no target has are left out of the key, so what
        callers invent cannot grow the cache."""
        chain_needs = self._known_needs(needs)
        if chain_needs is None:  # a tag no target has: no pool admits it (nothing kept)
            chain = model_chain(model, self._fallbacks)
            return () if any(self.serves(name) for name in chain) else None
        known = model in self._by_model or model in self._fallbacks
        key = (model if known else None, chain_needs)
        try:
            return self._reachable[key]
        except KeyError:
            pass
        chain = model_chain(model, self._fallbacks)
        reachable: tuple[TargetActor, ...] | None = None
        if any(self.serves(name) for name in chain):
            pools = [self.pool(name, needs) for name in chain]
            found = {actor.target_id: actor for pool in pools for actor in pool.actors}
            reachable = tuple(found.values())
        if len(self._reachable) >= POOL_CACHE_SIZE:
            self._reachable.clear()
        self._reachable[key] = reachable
        return reachable

    def _known_needs(self, needs: RequestNeeds) -> RequestNeeds | None:
        """``needs`` as the caches key it: avoided tags no target has left out (they
        change nothing, and a caller may invent any); None when it requires a tag no
        target has (nothing can take the request)."""
        if not (needs.require_tags or needs.avoid_tags):
            return needs
        if not needs.require_tags <= self._tags:
            return None
        return attrs.evolve(needs, avoid_tags=needs.avoid_tags & self._tags)

    def serves(self, model: str) -> bool:
        """Whether any target (whatever its state) serves ``model``: by name, or as a
        passthrough target serving any model. O(1)."""
        return model in self._by_model or bool(self._any_model)

    def models(self) -> list[str]:
        """The model names served by name (passthrough targets serve any)."""
        return sorted(self._by_model)

    def listed_models(self, fallbacks: Mapping[str, Sequence[str]]) -> list[str]:
        """The names to list as served now: each name a target serves by name while
        one of its targets is neither Disabled nor Draining, and each ``fallbacks``
        source (not ``"*"``) whose chain reaches such a name."""
        gone = (TargetState.DISABLED, TargetState.DRAINING)
        served = {
            name
            for name in self._by_model
            if any(actor.state not in gone for actor in self.candidates(name))
        }
        names = set(served)
        for source, chain in fallbacks.items():
            if source != "*" and any(name in served for name in chain):
                names.add(source)
        return sorted(names)


_EMPTY_POOL = make_pool(())
