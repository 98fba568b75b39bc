"""The baseline policy (nudges/baseline.py, docs/architecture.md "One decision, end to end",
step 5): probabilities proportional to score with a 15% share for "no nudge", clipped to
[0.01, 0.9] and renormalised, and a draw that follows the cumulative probabilities."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nudges.baseline import PolicyParams, clip_rows, draw, probabilities, smoothed_rate

EPS = 1e-9
DEFAULT = PolicyParams()


@st.composite
def scored_batches(draw_, max_rows: int = 6, max_templates: int = 14):
    n = draw_(st.integers(1, max_rows))
    m = draw_(st.integers(1, max_templates))
    scores = draw_(
        hnp.arrays(
            np.float64,
            (n, m),
            elements=st.one_of(
                st.just(0.0),
                st.floats(-1.0, -1e-6),
                st.floats(1e-6, 50.0),
            ),
        )
    )
    mask = draw_(hnp.arrays(np.bool_, (n, m)))
    return scores, mask


def _valid(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Candidates that can be chosen: allowed and with a positive score."""
    return mask & (scores > 0)


# --- probabilities: properties ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(scored_batches())
def test_every_row_is_a_probability_distribution_over_templates_and_no_nudge(batch):
    scores, mask = batch

    p = probabilities(scores, mask)

    assert p.shape == (scores.shape[0], scores.shape[1] + 1)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=EPS)


@settings(max_examples=300, deadline=None)
@given(scored_batches())
def test_masked_templates_and_templates_without_a_positive_score_get_exactly_zero(batch):
    scores, mask = batch

    p = probabilities(scores, mask)

    assert (p[:, :-1][~_valid(scores, mask)] == 0.0).all()


@settings(max_examples=300, deadline=None)
@given(scored_batches())
def test_floor_and_ceiling_hold_for_every_choice_that_can_be_made(batch):
    # at most 14 candidates plus "no nudge": 1/k is within [0.01, 0.9], so the bounds are
    # feasible and must hold exactly
    scores, mask = batch
    valid = _valid(scores, mask)

    p = probabilities(scores, mask)

    for row in np.flatnonzero(valid.any(axis=1)):
        chosen = np.append(p[row, :-1][valid[row]], p[row, -1])
        assert chosen.min() >= DEFAULT.floor - EPS
        assert chosen.max() <= DEFAULT.ceiling + EPS


@settings(max_examples=300, deadline=None)
@given(
    scored_batches(),
    st.floats(0.0, 0.5),
    st.floats(0.0, 0.05),
    st.floats(0.5, 1.0),
)
def test_floor_and_ceiling_hold_for_any_feasible_policy_parameters(
    batch, no_nudge_share, floor, ceiling
):
    # k <= 15 choices: floor <= 0.05 < 1/15 and 1/k <= 0.5 <= ceiling, so both bounds can hold
    scores, mask = batch
    valid = _valid(scores, mask)
    params = PolicyParams(no_nudge_share=no_nudge_share, floor=floor, ceiling=ceiling)

    p = probabilities(scores, mask, params=params)

    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=EPS)
    for row in np.flatnonzero(valid.any(axis=1)):
        chosen = np.append(p[row, :-1][valid[row]], p[row, -1])
        assert chosen.min() >= floor - EPS
        assert chosen.max() <= ceiling + EPS


@settings(max_examples=300, deadline=None)
@given(scored_batches())
def test_a_row_with_no_candidate_puts_all_its_probability_on_no_nudge(batch):
    scores, mask = batch
    empty = ~_valid(scores, mask).any(axis=1)

    p = probabilities(scores, mask)

    assert (p[empty, -1] == 1.0).all()
    assert (p[empty, :-1] == 0.0).all()


@settings(max_examples=300, deadline=None)
@given(scored_batches())
def test_a_higher_score_never_gets_a_lower_probability(batch):
    scores, mask = batch
    valid = _valid(scores, mask)

    p = probabilities(scores, mask)

    for row in range(scores.shape[0]):
        columns = np.flatnonzero(valid[row])
        order = columns[np.argsort(scores[row, columns], kind="stable")]
        assert (np.diff(p[row, order]) >= -EPS).all()


@settings(max_examples=200, deadline=None)
@given(scored_batches())
def test_rows_are_decided_independently(batch):
    scores, mask = batch

    together = probabilities(scores, mask)
    alone = np.vstack([probabilities(scores[i : i + 1], mask[i : i + 1]) for i in range(len(mask))])

    np.testing.assert_allclose(together, alone, atol=1e-12)


# --- probabilities: worked examples -----------------------------------------------------------


def test_unclipped_probabilities_are_proportional_to_score_with_the_no_nudge_share():
    p = probabilities(np.array([[3.0, 1.0]]), np.array([[True, True]]))

    np.testing.assert_allclose(p, [[0.85 * 3 / 4, 0.85 * 1 / 4, 0.15]], atol=1e-12)


def test_a_masked_template_gets_nothing_and_the_rest_share_its_mass():
    p = probabilities(np.array([[3.0, 5.0, 1.0]]), np.array([[True, False, True]]))

    np.testing.assert_allclose(p, [[0.6375, 0.0, 0.2125, 0.15]], atol=1e-12)


def test_a_tiny_score_is_raised_to_the_floor():
    p = probabilities(np.array([[100.0, 0.001]]), np.array([[True, True]]))

    assert p[0, 1] == pytest.approx(0.01)
    assert p.sum() == pytest.approx(1.0)
    assert p[0, 0] > p[0, 2] > p[0, 1]


def test_a_dominant_template_is_capped_at_the_ceiling():
    params = PolicyParams(no_nudge_share=0.02, floor=0.01, ceiling=0.9)

    p = probabilities(np.array([[1.0, 0.02]]), np.array([[True, True]]), params=params)

    assert p[0, 0] == pytest.approx(0.9)
    assert p.sum() == pytest.approx(1.0)
    # what the cap took is shared by the others in proportion to what they had
    assert p[0, 1] / p[0, 2] == pytest.approx((0.98 * 0.02 / 1.02) / 0.02)


def test_a_different_no_nudge_share_is_respected():
    params = PolicyParams(no_nudge_share=0.4)

    p = probabilities(np.ones((1, 4)), np.ones((1, 4), dtype=bool), params=params)

    np.testing.assert_allclose(p, [[0.15, 0.15, 0.15, 0.15, 0.4]], atol=1e-12)


def test_zero_and_negative_scores_are_not_candidates():
    p = probabilities(np.array([[0.0, -2.0, 1.0]]), np.ones((1, 3), dtype=bool))

    np.testing.assert_allclose(p, [[0.0, 0.0, 0.85, 0.15]], atol=1e-12)


@pytest.mark.parametrize(
    ("scores", "mask"),
    [
        ([[1.0, 2.0]], [[False, False]]),  # nothing allowed
        ([[0.0, 0.0]], [[True, True]]),  # nothing with a score
        ([[-1.0, 0.0]], [[True, True]]),
    ],
)
def test_a_row_with_no_candidate_does_not_nudge(scores, mask):
    p = probabilities(np.array(scores), np.array(mask))

    np.testing.assert_array_equal(p, [[0.0, 0.0, 1.0]])


def test_a_batch_mixes_rows_that_can_and_cannot_nudge():
    p = probabilities(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([[True, True], [False, False]]))

    np.testing.assert_allclose(p[0], [0.425, 0.425, 0.15])
    np.testing.assert_array_equal(p[1], [0.0, 0.0, 1.0])


def test_too_many_candidates_for_the_floor_relaxes_it_to_an_even_share():
    # 150 candidates and "no nudge": 151 x 0.01 > 1, so the floor cannot hold; every choice
    # keeps the largest floor that can, 1/151, which leaves them all equal
    scores = np.linspace(0.01, 10.0, 150)[None, :]

    p = probabilities(scores, np.ones_like(scores, dtype=bool))

    assert p.sum() == pytest.approx(1.0)
    assert p.min() >= 1 / 151 - EPS
    np.testing.assert_allclose(p, 1 / 151, atol=1e-9)


def test_the_ceiling_holds_for_a_policy_that_gives_no_nudge_no_share_of_its_own():
    # "no nudge" keeps the floor and the one candidate is capped: [0.9, 0.1] is the only
    # distribution within [0.01, 0.9] nearest to [1, 0]
    params = PolicyParams(no_nudge_share=0.0, floor=0.01, ceiling=0.9)

    p = probabilities(np.array([[2.0]]), np.array([[True]]), params=params)

    assert p.sum() == pytest.approx(1.0)
    assert p[0, 0] <= 0.9 + EPS
    assert p[0, 1] >= 0.01 - EPS


def test_a_ceiling_too_low_for_one_candidate_is_relaxed_to_an_even_split():
    params = PolicyParams(no_nudge_share=0.15, floor=0.01, ceiling=0.4)

    p = probabilities(np.array([[2.0]]), np.array([[True]]), params=params)

    np.testing.assert_allclose(p, [[0.5, 0.5]], atol=1e-12)


# --- clip_rows --------------------------------------------------------------------------------


@st.composite
def clip_cases(draw_):
    n = draw_(st.integers(1, 5))
    m = draw_(st.integers(1, 20))
    p = draw_(hnp.arrays(np.float64, (n, m), elements=st.floats(0.0, 10.0)))
    valid = draw_(hnp.arrays(np.bool_, (n, m)))
    valid[:, -1] = True  # like "no nudge", every row has at least one valid entry
    floor = draw_(st.floats(0.0, 0.2))
    ceiling = draw_(st.floats(0.3, 1.0))
    return p, valid, floor, ceiling


@settings(max_examples=400, deadline=None)
@given(clip_cases())
def test_clipped_rows_sum_to_one_within_bounds_relaxed_only_when_infeasible(case):
    p, valid, floor, ceiling = case
    k = valid.sum(axis=1)

    q = clip_rows(p, valid, floor=floor, ceiling=ceiling)

    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=EPS)
    assert (q[~valid] == 0.0).all()
    for row in range(len(q)):
        lo, hi = min(floor, 1 / k[row]), max(ceiling, 1 / k[row])
        assert q[row, valid[row]].min() >= lo - EPS
        assert q[row, valid[row]].max() <= hi + EPS


@settings(max_examples=200, deadline=None)
@given(clip_cases())
def test_clipping_a_clipped_row_changes_nothing(case):
    p, valid, floor, ceiling = case

    once = clip_rows(p, valid, floor=floor, ceiling=ceiling)
    twice = clip_rows(once, valid, floor=floor, ceiling=ceiling)

    np.testing.assert_allclose(twice, once, atol=1e-9)


@pytest.mark.parametrize(
    ("floor", "ceiling", "expected"),
    [
        (0.125, 0.5, [0.5, 0.5]),  # both entries pinned in one pass: one low, one high
        (0.1875, 0.875, [0.1875, 0.8125]),
    ],
)
def test_an_entry_pinned_at_the_floor_and_one_at_the_ceiling_both_stay_in_bounds(
    floor, ceiling, expected
):
    q = clip_rows(np.array([[0.0, 1.0]]), np.ones((1, 2), dtype=bool), floor=floor, ceiling=ceiling)

    np.testing.assert_allclose(q, [expected], atol=1e-12)


def test_a_row_already_within_bounds_is_only_normalised():
    p = np.array([[2.0, 3.0, 5.0]])

    q = clip_rows(p, np.ones_like(p, dtype=bool), floor=0.01, ceiling=0.9)

    np.testing.assert_allclose(q, [[0.2, 0.3, 0.5]], atol=1e-12)


def test_a_row_with_no_mass_is_spread_evenly_over_its_valid_entries():
    p = np.zeros((1, 4))
    valid = np.array([[True, False, True, True]])

    q = clip_rows(p, valid, floor=0.01, ceiling=0.9)

    np.testing.assert_allclose(q, [[1 / 3, 0.0, 1 / 3, 1 / 3]], atol=1e-12)


def test_a_single_valid_entry_takes_everything_whatever_the_ceiling():
    q = clip_rows(np.array([[0.3, 0.7]]), np.array([[False, True]]), floor=0.01, ceiling=0.9)

    np.testing.assert_array_equal(q, [[0.0, 1.0]])


def test_mass_on_invalid_entries_is_discarded_before_clipping():
    q = clip_rows(
        np.array([[0.5, 0.25, 0.25]]), np.array([[False, True, True]]), floor=0.0, ceiling=1.0
    )

    np.testing.assert_allclose(q, [[0.0, 0.5, 0.5]], atol=1e-12)


# --- draw -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("u", "column"),
    [(0.0, 0), (0.1999, 0), (0.2, 1), (0.4999, 1), (0.5, 2), (0.9999999, 2)],
)
def test_draw_picks_the_column_whose_cumulative_interval_holds_u(u, column):
    p = np.array([[0.2, 0.3, 0.5]])

    assert draw(p, np.array([u]))[0] == column


def test_draw_skips_a_zero_probability_column_at_its_boundary():
    p = np.array([[0.5, 0.0, 0.5]])

    assert draw(p, np.array([0.5]))[0] == 2
    assert draw(p, np.array([0.4999]))[0] == 0


def test_draw_never_picks_a_zero_column_when_rounding_leaves_the_total_under_one():
    p = np.array([[0.3, 0.7 - 1e-12, 0.0]])

    assert draw(p, np.array([1 - 1e-13]))[0] == 1


def test_draw_works_row_by_row():
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])

    np.testing.assert_array_equal(draw(p, np.array([0.9, 0.1, 0.7])), [0, 1, 1])


@st.composite
def distributions(draw_):
    m = draw_(st.integers(1, 12))
    weights = draw_(
        hnp.arrays(np.float64, m, elements=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)))
    )
    if weights.sum() == 0:
        weights[draw_(st.integers(0, m - 1))] = 1.0
    u = draw_(st.floats(0.0, 1.0, exclude_max=True))
    return weights / weights.sum(), u


@settings(max_examples=500, deadline=None)
@given(distributions())
def test_draw_never_picks_a_zero_probability_column(case):
    p, u = case

    column = draw(p[None, :], np.array([u]))[0]

    assert p[column] > 0


@settings(max_examples=500, deadline=None)
@given(distributions())
def test_draw_follows_the_cumulative_probabilities(case):
    p, u = case
    cumulative = np.cumsum(p)

    column = draw(p[None, :], np.array([u]))[0]

    if u < cumulative[-1]:
        below = cumulative[column - 1] if column > 0 else 0.0
        assert below <= u < cumulative[column]


def test_draw_frequencies_match_the_probabilities():
    p = np.array([0.05, 0.0, 0.6, 0.15, 0.2])
    rng = np.random.default_rng(7)
    n = 200_000

    chosen = draw(np.tile(p, (n, 1)), rng.random(n))

    frequencies = np.bincount(chosen, minlength=len(p)) / n
    np.testing.assert_allclose(frequencies, p, atol=0.005)
    assert frequencies[1] == 0.0


# --- the smoothed rate behind popularity ------------------------------------------------------


def test_the_smoothed_rate_starts_at_the_prior_and_moves_towards_the_observed_rate():
    assert float(smoothed_rate(0, 0)) == pytest.approx(0.3)
    assert float(smoothed_rate(10, 10)) == pytest.approx(13 / 20)
    assert 0.3 < float(smoothed_rate(900, 1000)) < 0.9
    assert float(smoothed_rate(900, 1000)) == pytest.approx(903 / 1010)
