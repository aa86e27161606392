"""Statistics helpers: Wilson intervals, bootstrap, paired agreement, non-inferiority verdicts."""

from __future__ import annotations

import math
import random
import statistics
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailwb.errors import ConfigError
from emailwb.quality.stats import (
    bootstrap_ci,
    field_agreement,
    non_inferiority,
    paired_agreement,
    paired_differences,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_known_values(k, n, low, high):
    assert wilson_interval(k, n) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(8, 10, confidence=0.99)[0] < wilson_interval(8, 10)[0]
    with pytest.raises(ConfigError):
        wilson_interval(11, 10)
    with pytest.raises(ConfigError):
        wilson_interval(1, 10, confidence=1.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_proportion(kn):
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    rng = random.Random(3)
    values = [rng.gauss(0.7, 0.1) for _ in range(300)]
    est, low, high = bootstrap_ci(values, seed=1)
    assert est == pytest.approx(statistics.fmean(values))
    assert low < est < high and high - low < 0.05
    assert bootstrap_ci(values, seed=1) == (est, low, high)
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([None, float("nan")]))
    med = bootstrap_ci(values, stat=statistics.median, n_boot=300)
    assert med[1] < med[0] < med[2]
    assert bootstrap_ci([True, False, None, True])[0] == pytest.approx(2 / 3)


def test_bootstrap_1000_items_2000_resamples_well_under_a_second():
    rng = random.Random(0)
    values = [rng.random() for _ in range(1000)]
    start = time.perf_counter()
    bootstrap_ci(values, n_boot=2000)
    assert time.perf_counter() - start < 0.5


def test_paired_agreement_exact_and_jaccard():
    exact = paired_agreement(
        ["deal", "Meeting", "legal", None], ["deal", "meeting ", "report", "x"]
    )
    assert (exact.kind, exact.n, exact.mean) == ("exact", 3, pytest.approx(2 / 3))
    assert exact.low < exact.mean < exact.high
    people_a = [[{"name": "John Smith"}, {"name": "Jane Doe"}], [], ["ENA"]]
    people_b = [[{"name": "john  smith"}], [], ["ENA", "EES"]]
    jac = paired_agreement(people_a, people_b)
    assert jac.kind == "jaccard" and jac.scores == [0.5, 1.0, 0.5]
    amounts = paired_agreement([[{"value": 5e6}]], [[{"value": 5000000.001, "currency": "USD"}]])
    assert amounts.scores == [1.0]


def test_field_agreement_over_result_dicts():
    a = [
        {"email_type": "deal", "business_value": {"level": "high"}, "organizations": ["Enron"]},
        {"email_type": "meeting", "business_value": {"level": "low"}, "organizations": []},
    ]
    b = [
        {"email_type": "deal", "business_value": {"level": "low"}, "organizations": ["enron"]},
        None,
    ]
    got = field_agreement(a, b, ["email_type", "business_value.level", "organizations"])
    assert got["email_type"].mean == 1.0 and got["email_type"].n == 1
    assert got["business_value.level"].mean == 0.0
    assert got["organizations"].scores == [1.0]


def test_paired_differences_skip_missing():
    assert paired_differences([1, None, True, 0.5], [1, 0, False, None]) == [0.0, -1.0]


def test_non_inferiority_equal_runs():
    a = [1.0, 0.8, 0.9, 0.7] * 25
    v = non_inferiority(paired_differences(a, a), margin=0.02)
    assert v.verdict == "non-inferior" and v.estimate == 0.0 and not v.superior
    assert v.n == 100 and "not worse" in v.explanation


def test_non_inferiority_clearly_worse():
    rng = random.Random(1)
    a = [rng.uniform(0.8, 1.0) for _ in range(200)]
    b = [x - 0.2 + rng.gauss(0, 0.02) for x in a]
    v = non_inferiority(paired_differences(a, b), margin=0.05)
    assert v.verdict == "inferior" and v.high < -0.05


def test_non_inferiority_within_margin_and_inconclusive_and_superior():
    rng = random.Random(2)
    within = [rng.gauss(-0.01, 0.03) for _ in range(400)]  # slightly worse, well inside 0.05
    v = non_inferiority(within, margin=0.05)
    assert v.verdict == "non-inferior" and v.estimate < 0 and v.low > -0.05
    noisy = [rng.gauss(-0.04, 0.3) for _ in range(30)]
    assert non_inferiority(noisy, margin=0.05).verdict == "inconclusive"
    better = non_inferiority([rng.gauss(0.1, 0.02) for _ in range(50)], margin=0.05)
    assert better.verdict == "non-inferior" and better.superior and "better" in better.explanation
    empty = non_inferiority([], margin=0.05)
    assert empty.verdict == "inconclusive" and empty.n == 0
    with pytest.raises(ConfigError):
        non_inferiority([0.0], margin=-0.1)
