"""A request's ledger: costs, the decision table row by row, endings, and invariants by
hypothesis (budgets never overspent, exclusions kept, operator cancels free)."""

from __future__ import annotations

import copy
import math
import random

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from oswitch.core.backoff import BackoffSettings
from oswitch.core.error_class import ErrorClass
from oswitch.core.ledger import (
    BudgetSpent,
    Cost,
    Decision,
    Ended,
    Ending,
    Failure,
    Ledger,
    deadline_message,
    decide,
    give_up,
    model_chain,
)

E = ErrorClass
NO_JITTER = BackoffSettings(base_s=1.0, multiplier=2.0, max_s=30.0, jitter="none")
TERMINAL = (E.POLICY_FAILURE, E.INVALID_REQUEST)


def ledger(retry_budget: int = 3, failover_budget: int = 2) -> Ledger:
    return Ledger(retry_budget=retry_budget, failover_budget=failover_budget)


def failed(
    error_class: ErrorClass,
    *,
    target_id: str = "a",
    model: str = "m",
    status: int | None = None,
    **facts: object,
) -> Ended:
    failure = Failure(error_class=error_class, status=status, message=f"{error_class} here")
    return Ended(target_id=target_id, model=model, failure=failure, **facts)  # type: ignore[arg-type]


def settle(book: Ledger, ended: Ended, now: float = 0.0) -> Decision:
    settlement = decide(book, ended, now=now, backoff=NO_JITTER, rng=random.Random(0))
    book.apply(settlement)
    return settlement.decision


# ---- costs -----------------------------------------------------------------------


def test_first_attempt_is_free_then_retries_and_failovers_cost() -> None:
    """The first attempt costs nothing; then a tried target costs a retry, a new one a failover."""
    book = ledger()
    assert book.cost_of("a") is Cost.FREE
    book.attempted("a", book.charge("a"))
    assert (book.cost_of("a"), book.cost_of("b")) == (Cost.RETRY, Cost.FAILOVER)
    book.attempted("b", book.charge("b"))
    book.attempted("a", book.charge("a"))
    assert (book.attempts, book.retries, book.failovers) == (3, 1, 1)


def test_a_hedge_always_costs_a_failover() -> None:
    """A hedge is a move to another target whatever it would otherwise cost."""
    book = ledger()
    assert book.charge("a") is Cost.FREE
    assert book.charge("b", hedge=True) is Cost.FAILOVER
    assert book.failovers == 1


def test_charging_past_a_budget_raises_and_changes_nothing() -> None:
    """An attempt the budgets cannot pay for is refused by the ledger, which stays as it was."""
    book = ledger(retry_budget=0, failover_budget=0)
    book.attempted("a", book.charge("a"))
    before = copy.deepcopy(book)
    for target_id, hedge in (("a", False), ("b", False), ("a", True)):
        with pytest.raises(BudgetSpent):
            book.charge(target_id, hedge=hedge)
    assert book == before


def test_refused_orders_are_refunded_and_are_not_attempts() -> None:
    """A target that took nothing costs nothing, and the free first attempt stays free."""
    book = ledger()
    book.attempted("a", book.charge("a"), refused=True)
    assert (book.attempts, book.tried, book.cost_of("b")) == (0, set(), Cost.FREE)
    book.attempted("a", book.charge("a"))
    book.attempted("b", book.charge("b"), refused=True)
    assert (book.attempts, book.failovers, book.cost_of("b")) == (1, 0, Cost.FAILOVER)


def test_an_operator_cancel_costs_nothing_and_frees_the_next_attempt() -> None:
    """An attempt an operator cancelled is refunded and the attempt after it is free."""
    book = ledger()
    book.attempted("a", book.charge("a"))
    book.attempted("b", book.charge("b"), forgiven=True)
    assert (book.attempts, book.failovers, book.cost_of("c")) == (2, 0, Cost.FREE)


def test_a_spent_failover_budget_leaves_untried_targets_out() -> None:
    """With failover_budget spent only tried targets are usable (for a retry)."""
    book = ledger(retry_budget=1, failover_budget=0)
    book.attempted("a", book.charge("a"))
    assert not book.may_fail_over()
    assert (book.usable("a", "m", None), book.usable("b", "m", None)) == (True, False)


# ---- the decision table ----------------------------------------------------------


@pytest.mark.parametrize(
    "error_class, decision, excluded",
    [
        (E.RATE_LIMITED, Decision.COOLDOWN, False),
        (E.QUOTA_EXHAUSTED, Decision.FAILOVER, True),
        (E.AUTH_FAILURE, Decision.FAILOVER, True),
        (E.PERMISSION_FAILURE, Decision.FAILOVER, True),
        (E.REGION_RESTRICTION, Decision.FAILOVER, True),
        (E.MODEL_UNAVAILABLE, Decision.FAILOVER, True),
        (E.TRANSIENT_SERVER_FAILURE, Decision.BACKOFF, False),
        (E.TRANSPORT_FAILURE, Decision.BACKOFF, False),
        (E.INTERRUPTED_EXECUTION, Decision.FAILOVER, True),
        (E.POLICY_FAILURE, Decision.RETURN, False),
        (E.INVALID_REQUEST, Decision.RETURN, False),
    ],
)
def test_each_class_decides_as_the_table_says(
    error_class: ErrorClass, decision: Decision, excluded: bool
) -> None:
    """Each error class gets its decision, and exclusion, of the recovery table."""
    book = ledger()
    assert settle(book, failed(error_class)) is decision
    assert ("a" in book.excluded) is excluded
    assert book.last_failure == Failure(error_class=error_class, message=f"{error_class} here")


def test_terminal_classes_raise_others_do_not() -> None:
    """Only PolicyFailure and InvalidRequest end the request with RequestFailed."""
    for error_class in E:
        settlement = decide(
            ledger(), failed(error_class), now=0.0, backoff=NO_JITTER, rng=random.Random(0)
        )
        assert settlement.raises is (error_class in TERMINAL)


def test_a_silent_target_is_failed_over_at_once() -> None:
    """TransportFailure with no answer in time is never retried on that target."""
    book = ledger()
    assert settle(book, failed(E.TRANSPORT_FAILURE, silent=True)) is Decision.FAILOVER
    assert "a" in book.excluded and "a" not in book.not_before


def test_an_operator_cancel_fails_over_without_a_failure() -> None:
    """A cancelled attempt excludes its target and leaves the last failure alone."""
    book = ledger()
    settle(book, failed(E.RATE_LIMITED))
    assert settle(book, Ended(target_id="b", model="m", cancelled=True)) is Decision.FAILOVER
    assert "b" in book.excluded
    assert book.last_class is E.RATE_LIMITED


def test_backoff_holds_the_target_back_for_growing_delays() -> None:
    """Each transient failure holds the target back for the next backoff delay."""
    book = ledger()
    assert book.held_until("a") == -math.inf
    for rounds, (now, delay) in enumerate([(0.0, 1.0), (5.0, 2.0), (10.0, 4.0)]):
        assert settle(book, failed(E.TRANSIENT_SERVER_FAILURE), now=now) is Decision.BACKOFF
        assert book.held_until("a") == now + delay
        assert book.backoff_rounds["a"] == rounds + 1


def test_a_fresh_credential_is_retried_at_once_on_the_same_target() -> None:
    """An AuthFailure after which the key changed sends the same target next."""
    book = ledger()
    assert settle(book, failed(E.AUTH_FAILURE, fresh_credential=True)) is Decision.RETRY
    assert "a" not in book.excluded
    assert book.take_retry_next() == "a"
    assert book.take_retry_next() is None


def test_too_large_for_a_per_minute_limit_goes_to_a_sibling() -> None:
    """RequestTooLarge with 429 excludes the key only; a sibling may take it."""
    book = ledger()
    assert settle(book, failed(E.REQUEST_TOO_LARGE, status=429)) is Decision.FAILOVER
    assert "a" in book.excluded and book.context_limit is None


def test_too_large_for_a_known_window_walks_to_larger_windows() -> None:
    """A context refusal keeps the target out for the model and only larger windows in."""
    book = ledger()
    ended = failed(E.REQUEST_TOO_LARGE, status=400, context_window=8000)
    assert settle(book, ended) is Decision.FALLBACK
    assert book.context_limit == 8000
    assert not book.usable("a", "m", 8000)
    assert book.usable("a", "other", 8000)  # the same target, another model
    assert book.usable("b", "m", None)  # unknown windows are not known to be smaller
    settle(book, failed(E.REQUEST_TOO_LARGE, target_id="b", context_window=4000))
    assert book.context_limit == 8000  # the limit never shrinks


def test_too_large_with_no_known_window_leaves_out_every_windowless_target() -> None:
    """A refusal from a target of unknown window excludes all unknown-window targets of
    that model, but not targets with a known window or other models."""
    book = ledger()
    assert settle(book, failed(E.REQUEST_TOO_LARGE)) is Decision.FALLBACK
    assert book.context_limit is None
    assert not book.usable("b", "m", None)
    assert book.usable("c", "m", 128_000)
    assert book.usable("b", "other", None)


def test_a_refused_prefill_retries_once_in_the_instruction_form() -> None:
    """While resuming, an InvalidRequest from a prefill target retries it at once, free,
    without prefill; the same refusal again is returned as is."""
    book = ledger()
    book.attempted("a", book.charge("a"))
    book.begin_resume("partial answer")
    assert book.prefills("a", capable=True)
    assert settle(book, failed(E.INVALID_REQUEST, prefill_capable=True)) is Decision.RETRY
    assert (book.take_retry_next(), book.cost_of("a")) == ("a", Cost.FREE)
    assert not book.prefills("a", capable=True)
    assert settle(book, failed(E.INVALID_REQUEST, prefill_capable=True)) is Decision.RETURN


def test_an_interrupted_stream_is_the_last_failure_and_an_operator_cut_is_free() -> None:
    """A stream broken after content records InterruptedExecution; if an operator cut it,
    the attempt continuing it is free."""
    book = ledger()
    book.attempted("a", book.charge("a"))
    book.interrupted(forgiven=False)
    assert (book.last_class, book.cost_of("b")) == (E.INTERRUPTED_EXECUTION, Cost.FAILOVER)
    book.interrupted(forgiven=True)
    assert book.cost_of("b") is Cost.FREE


def test_decide_never_changes_the_ledger() -> None:
    """decide only reads the ledger; apply is what changes it."""
    book = ledger()
    book.attempted("a", book.charge("a"))
    before = copy.deepcopy(book)
    for error_class in E:
        decide(book, failed(error_class), now=1.0, backoff=NO_JITTER, rng=random.Random(1))
    assert book == before


# ---- endings ---------------------------------------------------------------------


def ending(
    book: Ledger, *, served: bool = True, admitted: bool = True, all_rate_limited: bool = False
) -> Failure | Ending:
    return give_up(
        book, shown="gpt-x", served=served, admitted=admitted, all_rate_limited=all_rate_limited
    )


def test_give_up_messages() -> None:
    """Each way a request runs out says why, in the words callers and the sidecar rely on."""
    fresh = ledger()
    assert ending(fresh, served=False).message == "no target serves model 'gpt-x'"
    assert ending(fresh, admitted=False).message == (
        "no target serving 'gpt-x' accepts this request (capabilities/tags)"
    )
    assert ending(fresh) == Ending(
        message="no target for 'gpt-x' became eligible in time", error_class=None
    )
    limited = ending(fresh, all_rate_limited=True)
    assert (limited.message, limited.error_class) == (
        "no target for 'gpt-x' became eligible in time (all rate-limited)",
        E.RATE_LIMITED,
    )
    book = ledger()
    book.attempted("a", book.charge("a"))
    book.attempted("b", book.charge("b"))
    settle(book, failed(E.TRANSIENT_SERVER_FAILURE))
    assert ending(book).message == (
        "all targets failed for 'gpt-x' after 2 attempt(s) (retries 0/3, failovers 1/2)"
        "; last failure: TransientServerFailure"
    )
    assert deadline_message(book) == (
        "deadline exceeded after 2 attempt(s); last failure: TransientServerFailure"
    )
    assert deadline_message(fresh) == "deadline exceeded after 0 attempt(s)"


def test_give_up_after_too_large_is_the_providers_refusal() -> None:
    """A request too large for every target ends as that refusal (RequestFailed)."""
    book = ledger()
    settle(book, failed(E.REQUEST_TOO_LARGE, status=400))
    assert ending(book) == Failure(
        error_class=E.REQUEST_TOO_LARGE, status=400, message="RequestTooLarge here"
    )


# ---- invariants ------------------------------------------------------------------

TARGETS = ("a", "b", "c")
MODELS = ("m", "n")
WINDOWS = (None, 4000, 8000)


def ended_strategy() -> st.SearchStrategy[Ended]:
    failure = st.builds(
        Failure,
        error_class=st.sampled_from(list(E)),
        status=st.sampled_from([None, 400, 429, 500]),
    )
    facts = st.fixed_dictionaries(
        {
            "target_id": st.sampled_from(TARGETS),
            "model": st.sampled_from(MODELS),
            "fresh_credential": st.booleans(),
            "context_window": st.sampled_from(WINDOWS),
            "prefill_capable": st.booleans(),
        }
    )

    def build(facts: dict[str, object], failure: Failure | None, silent: bool) -> Ended:
        silent = silent and failure is not None
        if silent:
            failure = Failure(error_class=E.TRANSPORT_FAILURE)
        return Ended(cancelled=failure is None, failure=failure, silent=silent, **facts)  # type: ignore[arg-type]

    return st.builds(build, facts, st.none() | failure, st.booleans())


class LedgerMachine(RuleBasedStateMachine):
    """Attempts sent, overlapping (hedges), booked and settled in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.book = Ledger(retry_budget=2, failover_budget=2)
        self.pending: list[tuple[str, Cost]] = []
        self.excluded: set[str] = set()
        self.now = 0.0
        self.rng = random.Random(0)
        self.limit = 0

    @rule(target_id=st.sampled_from(TARGETS), hedge=st.booleans())
    def send(self, target_id: str, hedge: bool) -> None:
        book = self.book
        cost = Cost.FAILOVER if hedge else book.cost_of(target_id)
        affordable = (
            cost is Cost.FREE
            or (cost is Cost.RETRY and book.retries < book.retry_budget)
            or (cost is Cost.FAILOVER and book.may_fail_over())
        )
        if affordable:
            assert book.charge(target_id, hedge=hedge) is cost
            self.pending.append((target_id, cost))
            return
        before = copy.deepcopy(book)
        with pytest.raises(BudgetSpent):
            book.charge(target_id, hedge=hedge)
        assert book == before

    @rule(data=st.data(), how=st.sampled_from(["done", "refused", "forgiven"]))
    def book_attempt(self, data: st.DataObject, how: str) -> None:
        if not self.pending:
            return
        target_id, cost = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        spent = (self.book.retries, self.book.failovers)
        self.book.attempted(target_id, cost, refused=how == "refused", forgiven=how == "forgiven")
        refund = (int(cost is Cost.RETRY), int(cost is Cost.FAILOVER))
        if how == "done":
            assert (self.book.retries, self.book.failovers) == spent
        else:  # neither a refused order nor an operator's cancel costs anything
            assert (self.book.retries, self.book.failovers) == (
                spent[0] - refund[0],
                spent[1] - refund[1],
            )
        if how == "forgiven":
            assert self.book.cost_of(target_id) is Cost.FREE

    @rule(ended=ended_strategy(), dt=st.floats(0.0, 5.0))
    def settle(self, ended: Ended, dt: float) -> None:
        self.now += dt
        before = copy.deepcopy(self.book)
        settlement = decide(self.book, ended, now=self.now, backoff=NO_JITTER, rng=self.rng)
        assert self.book == before  # decide is pure
        failure = ended.failure
        if failure is not None and failure.error_class in TERMINAL:
            prefill_retry = (
                self.book.resuming
                and failure.error_class is E.INVALID_REQUEST
                and self.book.prefills(ended.target_id, ended.prefill_capable)
            )
            assert settlement.decision is (Decision.RETRY if prefill_retry else Decision.RETURN)
            assert settlement.raises is not prefill_retry
        if settlement.decision is Decision.BACKOFF:
            assert settlement.not_before is not None and settlement.not_before >= self.now
        self.book.apply(settlement)

    @rule(text=st.text(max_size=5))
    def resume(self, text: str) -> None:
        self.book.begin_resume(text)

    @invariant()
    def budgets_are_never_overspent(self) -> None:
        assert 0 <= self.book.retries <= self.book.retry_budget
        assert 0 <= self.book.failovers <= self.book.failover_budget

    @invariant()
    def an_excluded_target_stays_excluded(self) -> None:
        assert self.excluded <= self.book.excluded
        self.excluded = set(self.book.excluded)
        for target_id in self.excluded:
            for model in MODELS:
                for window in WINDOWS:
                    assert not self.book.usable(target_id, model, window)

    @invariant()
    def the_context_limit_never_shrinks(self) -> None:
        limit = self.book.context_limit or 0
        assert limit >= self.limit
        self.limit = limit


LedgerMachine.TestCase.settings = hyp_settings(max_examples=200, stateful_step_count=30)
test_ledger_invariants = LedgerMachine.TestCase


@given(
    model=st.sampled_from((*MODELS, "*")),
    fallbacks=st.dictionaries(
        st.sampled_from((*MODELS, "*", "o")), st.lists(st.sampled_from((*MODELS, "o", "p")))
    ),
)
def test_a_chain_never_revisits_a_model(model: str, fallbacks: dict[str, list[str]]) -> None:
    """The model chain starts with the requested model and names no model twice."""
    chain = model_chain(model, fallbacks)
    assert chain[0] == model
    assert len(chain) == len(set(chain))
    assert set(chain) == {model, *fallbacks.get(model, fallbacks.get("*", []))}


def test_never_twice_a_stall_excludes_a_second_cut_avoids() -> None:
    """A stalled target is out for the request; a cut one may be continued once, and a
    second cut passes it over until every other candidate is spent (stop_avoiding)."""
    book = Ledger(retry_budget=3, failover_budget=3)
    book.interrupted("stalled", forgiven=False, stalled=True)
    book.interrupted("cut", forgiven=False)
    assert not book.usable("stalled", "m", None)
    assert book.usable("cut", "m", None)  # once: it may continue the answer
    book.interrupted("cut", forgiven=False)
    assert not book.usable("cut", "m", None)
    assert book.stop_avoiding() is True
    assert book.usable("cut", "m", None) and not book.usable("stalled", "m", None)
    assert book.stop_avoiding() is False
    book.interrupted("op", forgiven=True, stalled=True)  # an operator's cut costs nothing
    assert book.usable("op", "m", None)
