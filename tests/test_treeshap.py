"""The TreeSHAP tables (nudges/treeshap.py) give what LightGBM's pred_contrib gives, for the
kinds of split LightGBM makes: numerical with each missing-value handling, categorical (with
negative, missing, fractional and unseen categories), a feature split on twice along a path,
trees of a single leaf; and a model too large for tables keeps LightGBM's own."""

import lightgbm as lgb
import numpy as np
import pytest

from nudges.recommender import ModelBundle
from nudges.treeshap import PathTables


def _rows(n: int, rng: np.random.Generator, *, missing: float = 0.0) -> np.ndarray:
    x = np.column_stack(
        [
            rng.normal(size=n),
            rng.normal(size=n),
            rng.integers(0, 4, size=n).astype(float),  # often exactly zero
            rng.uniform(-1, 1, size=n),
            rng.integers(0, 12, size=n).astype(float),  # a category
        ]
    )
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    return x


def _label(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    z = np.nan_to_num(x)
    score = (
        z[:, 0] + 0.5 * z[:, 1] * z[:, 3] - 0.7 * (z[:, 2] == 0) + 0.4 * np.isin(z[:, 4], [1, 5, 7])
    )
    return (score + rng.normal(scale=0.5, size=len(x)) > 0).astype(float)


def _train(params: dict, *, missing: float = 0.0, rounds: int = 25, seed: int = 3) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = _rows(3_000, rng, missing=missing)
    data = lgb.Dataset(x, _label(x, rng), categorical_feature=[4], free_raw_data=False)
    options = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed, **params}
    return lgb.train(options, data, rounds)


def _same_as_lightgbm(booster: lgb.Booster, rows: np.ndarray) -> None:
    tables = PathTables.build(booster)
    assert tables is not None
    expected = booster.predict(rows, pred_contrib=True)
    assert isinstance(expected, np.ndarray)
    got = tables.contributions(rows)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # Contributions and bias add up to the raw score, as LightGBM's do.
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(rows, raw_score=True), atol=1e-9)


@pytest.mark.parametrize(
    "params",
    [
        {"num_leaves": 31},  # missing values go to a learned side (type NaN or None)
        {"num_leaves": 15, "zero_as_missing": True},  # zeros are missing (type Zero)
        {"num_leaves": 15, "use_missing": False},  # nothing is missing (type None)
        {"num_leaves": 63, "max_depth": 12, "min_data_in_leaf": 5},  # long paths, repeats
        {"num_leaves": 31, "objective": "regression"},
    ],
    ids=["nan", "zero-as-missing", "no-missing", "deep", "regression"],
)
def test_tables_match_lightgbm_pred_contrib(params: dict) -> None:
    booster = _train(params, missing=0.1)
    rows = _rows(300, np.random.default_rng(11), missing=0.15)
    _same_as_lightgbm(booster, rows)


def test_odd_categories_and_zeros_go_where_lightgbm_sends_them() -> None:
    booster = _train({"num_leaves": 31, "zero_as_missing": True}, missing=0.1)
    rows = _rows(40, np.random.default_rng(5))
    rows[:8, 4] = [-1.0, np.nan, 2.7, 11.999, 12.0, 250.0, 1e12, -0.5]
    rows[8:16, 2] = [0.0, -0.0, 1e-36, -1e-36, 1e-30, np.nan, 3.0, 0.0]
    rows[16:20, :] = np.nan
    _same_as_lightgbm(booster, rows)


def test_a_feature_split_on_twice_along_a_path_is_counted_once() -> None:
    # One informative feature and deep trees: most paths split on it several times.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2_000, 3))
    y = (np.sin(3 * x[:, 0]) + 0.1 * x[:, 1] > 0).astype(float)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "min_data_in_leaf": 5, "verbose": -1},
        lgb.Dataset(x, y),
        10,
    )
    dump = booster.dump_model()["tree_info"][0]["tree_structure"]
    assert _repeats_on_a_path(dump, [])
    _same_as_lightgbm(booster, rng.normal(size=(100, 3)))


def _repeats_on_a_path(node: dict, seen: list[int]) -> bool:
    if "split_index" not in node:
        return len(seen) != len(set(seen))
    path = [*seen, node["split_feature"]]
    return _repeats_on_a_path(node["left_child"], path) or _repeats_on_a_path(
        node["right_child"], path
    )


def test_single_leaf_trees_add_only_to_the_bias() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 2))
    y = (x[:, 0] > 0).astype(float)
    # A first round that may not split (too few rows for two leaves), then rounds that do.
    stump = lgb.train(
        {"objective": "binary", "min_data_in_leaf": 400, "verbose": -1}, lgb.Dataset(x, y), 1
    )
    booster = lgb.train(
        {"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 4, init_model=stump
    )
    leaves = [t["num_leaves"] for t in booster.dump_model()["tree_info"]]
    assert leaves[0] == 1 and min(leaves[1:]) > 1
    _same_as_lightgbm(booster, rng.normal(size=(50, 2)))


def test_a_model_too_large_for_tables_keeps_lightgbms_contributions() -> None:
    booster = _train({"num_leaves": 31})
    assert PathTables.build(booster, max_entries=100) is None
    rows = _rows(20, np.random.default_rng(8))
    bundle = ModelBundle(version="t", schema=None, act=booster, effect=booster)  # type: ignore[arg-type]
    bundle._tables.append(None)  # as the bundle records a model without tables
    np.testing.assert_array_equal(
        bundle.contributions(rows), booster.predict(rows, pred_contrib=True)
    )


def test_the_bundle_explains_with_its_tables() -> None:
    booster = _train({"num_leaves": 31}, missing=0.05)
    bundle = ModelBundle(version="t", schema=None, act=booster, effect=booster)  # type: ignore[arg-type]
    rows = _rows(30, np.random.default_rng(9), missing=0.05)
    got = bundle.contributions(rows)
    assert isinstance(bundle.explainer(), PathTables)
    np.testing.assert_allclose(got, booster.predict(rows, pred_contrib=True), atol=1e-9)


def test_categories_too_many_for_a_dense_table_keep_lightgbms_contributions() -> None:
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.normal(size=2_000), rng.integers(0, 5, size=2_000) * 100_000.0])
    y = ((x[:, 1] == 200_000) | (x[:, 0] > 1)).astype(float)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(x, y, categorical_feature=[1]),
        5,
    )
    assert any(
        "==" in str(t["tree_structure"]) for t in booster.dump_model()["tree_info"]
    )  # it did split on the category
    assert PathTables.build(booster, max_entries=1_000_000) is None
    assert PathTables.build(booster, max_entries=10_000_000) is not None
