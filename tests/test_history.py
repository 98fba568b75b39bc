"""nudges.history: the decayed sums and last-event times agree with a brute-force reading of
their definition on every path (queries at one moment, few at mixed moments, many at mixed
moments)."""

import numpy as np
import pytest

from nudges import history as H


def _brute(event_key, event_time, event_weight, query_key, query_time, tau):
    total, last = [], []
    for key, at in zip(query_key, query_time, strict=True):
        hit = (event_key == key) & (event_time < at)
        total.append(float((event_weight[hit] * np.exp(-(at - event_time[hit]) / tau)).sum()))
        last.append(float(event_time[hit].max()) if hit.any() else np.nan)
    return np.array(total), np.array(last)


@pytest.mark.parametrize(
    ("events", "queries", "same_moment"),
    # one moment (few and many: the grouped sum); mixed moments (few: the direct comparison;
    # many: the sorted scan)
    [(30, 40, True), (800, 600, True), (30, 40, False), (800, 600, False), (0, 40, True)],
)
def test_sums_and_last_times_match_the_definition(events, queries, same_moment):
    rng = np.random.default_rng(events + queries + same_moment)
    event_key = rng.integers(0, 50, events)
    event_time = np.round(rng.uniform(0, 60, events), 1)  # ties with query times happen
    event_weight = rng.random(events)
    query_key = rng.integers(0, 60, queries)  # some keys have no event
    query_time = np.full(queries, 30.0) if same_moment else np.round(rng.uniform(0, 60, queries))
    kwargs = {"event_key": event_key, "event_time": event_time, "query_key": query_key}

    total = H.decayed_sums(**kwargs, event_weight=event_weight, query_time=query_time, tau=3.0)
    last = H.last_event_before(**kwargs, query_time=query_time)

    expected_total, expected_last = _brute(
        event_key, event_time, event_weight, query_key, query_time, 3.0
    )
    np.testing.assert_allclose(total, expected_total, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(last), np.isnan(expected_last))
    np.testing.assert_allclose(last[~np.isnan(last)], expected_last[~np.isnan(expected_last)])


def test_an_event_at_the_moment_of_the_query_does_not_count():
    many = 1000
    total = H.decayed_sums(
        event_key=np.zeros(many, dtype=np.int64),
        event_time=np.full(many, 10.0),
        event_weight=np.ones(many),
        query_key=np.zeros(many, dtype=np.int64),
        query_time=np.full(many, 10.0),
        tau=1.0,
    )
    assert (total == 0).all()


@pytest.mark.parametrize("events", [0, 1, 300])
def test_several_sums_at_one_moment_match_the_definition(events):
    # sums_at: what the engine asks when it decides (several weights and scales over the same
    # keys, one grouping of the events)
    rng = np.random.default_rng(events)
    event_key = rng.integers(0, 40, events)
    event_time = np.round(rng.uniform(0, 60, events), 1)
    acted = (rng.random(events) < 0.3).astype(float)
    ones = np.ones(events)
    query_key = rng.integers(0, 50, 200)
    at = 30.0
    totals, last = H.sums_at(
        event_key=event_key,
        event_time=event_time,
        query_key=query_key,
        at=at,
        weighted=[(ones, 3.0), (acted, 7.0), (acted, 14.0)],
    )
    assert len(totals) == 3
    when = np.full(len(query_key), at)
    for total, (weight, tau) in zip(
        totals, [(ones, 3.0), (acted, 7.0), (acted, 14.0)], strict=True
    ):
        expected, expected_last = _brute(event_key, event_time, weight, query_key, when, tau)
        np.testing.assert_allclose(total, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(last), np.isnan(expected_last))
    np.testing.assert_allclose(last[~np.isnan(last)], expected_last[~np.isnan(expected_last)])
