"""Metrics: rolling rates, percentiles, error rate, ETA, history; ``status_json``."""

from __future__ import annotations

import itertools
import os

from emailwb.engine.throughput import Metrics, MetricsSnapshot, status_json
from emailwb.quality.stats import percentile


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_percentile_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) in (50.0, 51.0)
    assert percentile(values, 0.95) in (95.0, 96.0)


def test_snapshot_fields_rates_and_eta():
    clock = Clock()
    m = Metrics(window_s=60, clock=clock, server_pid=os.getpid())
    m.start(total=100, done=10, failed=0, emails_done=20)
    for i in range(30):  # 30 units over 30 s, 2 emails each, 100 + 50 tokens
        clock.t += 1.0
        m.attempt(True, retry=i % 10 == 0)
        m.unit_done(
            emails=2, latency_s=1.0 + i / 100, ttft_s=0.2, prompt_tokens=100, completion_tokens=50
        )
    m.attempt(False)
    m.unit_failed()
    m.in_flight, m.limit = 3, 4
    s = m.snapshot()
    assert isinstance(s, MetricsSnapshot)
    assert set(MetricsSnapshot.field_names()) >= {
        "units_per_min",
        "emails_per_min",
        "tokens_per_s",
        "latency_p50",
        "latency_p95",
        "ttft_p50",
        "ttft_p95",
        "in_flight",
        "attempt_error_rate",
        "eta_s",
        "cpu_percent",
        "rss_mb",
        "server_cpu_percent",
        "server_rss_mb",
        "pending",
        "limit",
    }
    assert s.done == 40 and s.failed == 1 and s.pending == 59 and s.emails_done == 80
    assert abs(s.units_per_min - 60.0) < 1e-6  # 30 units in 30 s
    assert abs(s.emails_per_min - 120.0) < 1e-6
    assert abs(s.tokens_per_s - 150.0) < 1e-6
    assert 1.1 <= s.latency_p50 <= 1.2 and s.latency_p95 <= 1.3 and s.ttft_p50 == 0.2
    assert abs(s.attempt_error_rate - 1 / 31) < 1e-9 and s.retries == 3
    assert abs(s.eta_s - 59.0) < 1e-6  # 59 pending at one unit per second
    assert s.in_flight == 3 and s.limit == 4
    assert s.rss_mb is not None and s.rss_mb > 0 and s.server_rss_mb is not None
    clock.t += 120  # everything leaves the window: too few units in it for a rate
    later = m.snapshot()
    assert abs(later.units_per_min - 30 / 150 * 60) < 1e-6  # the session's: 30 units in 150 s
    assert abs(later.eta_s - 59 / (30 / 150)) < 1e-6
    m.state = "stopped"
    assert m.snapshot().eta_s is None  # no ETA for a run that is not running


def test_a_slow_run_has_a_steady_rate_and_eta():
    """4 slots on a small CPU model: units finish in bursts of 4 every 40 s. A rolling minute
    holds 4 or 8 of them in turn (a 2x swing); the rate and the ETA must not follow that."""
    clock = Clock()
    m = Metrics(clock=clock, window_s=60.0)
    m.start(total=200)
    rates, etas = [], []
    for burst in range(12):  # a burst of 4 units, then 40 s of silence sampled every 10 s
        for _ in range(4):
            m.unit_done(
                emails=2, latency_s=40.0, ttft_s=5.0, prompt_tokens=700, completion_tokens=50
            )
        for _ in range(4):
            clock.t += 10.0
            snap = m.snapshot()
            if burst >= 3:  # from the third minute on
                rates.append(snap.units_per_min)
                etas.append(snap.eta_s)
    assert max(rates) / min(rates) < 1.5, rates  # about 6 units/min throughout
    assert all(4.5 <= r <= 7.5 for r in rates), rates
    # the ETA moves in small steps, never by the 2x a rolling window gives here
    assert all(abs(b - a) <= 0.2 * a for a, b in itertools.pairwise(etas))


def test_history_is_bounded():
    clock = Clock()
    m = Metrics(clock=clock, history_len=5)
    m.start(total=1)
    for _ in range(8):
        clock.t += 1
        m.sample()
    assert len(m.history) == 5 and m.history[-1].t == 8.0
    assert m.history[-1].as_dict()["total"] == 1


def test_status_json_without_runs(store):
    assert status_json(store) == {"run": None, "runs": []}
