"""The retry policy's pure decisions: outcomes, backoff with jitter and Retry-After, more room
for a reply cut at the token limit."""

from __future__ import annotations

import random

from emailwb.errors import BackendOverloaded, BackendTimeout, BackendUnavailable, SchemaViolation
from emailwb.retry import backoff_delay, cut_by_token_limit, outcome, roomier


def test_errors_map_to_the_controllers_outcomes():
    assert outcome(BackendOverloaded("503")) == "overload"
    assert outcome(BackendTimeout("slow")) == "timeout"
    assert outcome(SchemaViolation("bad")) == "invalid"
    assert outcome(BackendUnavailable("down")) == "error"


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after():
    rng = random.Random(1)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (8, 5.0)]:
        d = backoff_delay(attempt, BackendUnavailable("down"), base=0.5, cap=5.0, rng=rng)
        assert full / 2 <= d <= full
    err = BackendOverloaded("busy", retry_after=7.0)
    assert 7.0 <= backoff_delay(1, err, base=0.5, cap=5.0, rng=rng) <= 7.7


def test_a_reply_cut_at_the_token_limit_is_retried_with_twice_the_room():
    cut = SchemaViolation("the reply does not match the output schema: reply cut at the token "
                          "limit; Unterminated string")
    assert cut_by_token_limit(cut) and not cut_by_token_limit(SchemaViolation("bad enum"))
    assert roomier({}, {"num_predict": 768}) == {"num_predict": 1536}
    assert roomier({"num_predict": 1536, "temperature": 0}, {"num_predict": 768}) == {
        "num_predict": 3072, "temperature": 0}
    assert roomier({}, {}) == {"num_predict": 1536}
