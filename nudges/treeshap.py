"""Pure: the per-feature contributions LightGBM's `predict(pred_contrib=True)` returns (path-
dependent TreeSHAP, arXiv:1706.06060), computed from tables built once per model instead of by
LightGBM's recursion over every node for every row.

For one leaf l, let U be the distinct features its path tests (u of them), z_d the share of the
training rows that follow the path at d's splits (the product over d's splits of child count /
parent count) and o_d = 1 when the row follows the path at all of d's splits, else 0. TreeSHAP
gives feature d of U, from this leaf,

    v_l (o_d - z_d) sum over S in U minus d of |S|! (u - 1 - |S|)! / u!
                                     x prod(o_i, i in S) x prod(z_i, i in U minus S minus d)

the Shapley value of the leaf's part of the tree's expected output over the features of its
path (a feature off the path changes nothing there). A row enters only through the o's: u bits,
the leaf's *pattern*. So for every leaf and every one of its 2^u patterns the u values are
computed when the model is loaded, and a row's contributions are: every split decided for the
row (as LightGBM decides it, missing values and categories included), each leaf's pattern read
from its path, the leaf's values for that pattern looked up and added per feature. The last
column is the bias, the sum of each tree's expected output, as in LightGBM.

The tables hold sum(2^u x u) numbers over all leaves: 1.75 million (14 MB) for the benchmark's
P(act) model (150 trees of 31 leaves; at most 12 distinct features on a path). A model whose
paths would need more than MAX_TABLE_ENTRIES gets no tables (`PathTables.build` returns None)
and its contributions stay LightGBM's. The results equal LightGBM's up to the order of
floating-point additions (tests/test_treeshap.py)."""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold: a value this close to 0 counts as zero
MAX_TABLE_ENTRIES = 8_000_000  # 64 MB of float64
DECIDE_BLOCK = 64  # rows whose splits are decided together
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}


@dataclass(frozen=True)
class _Leaf:
    value: float
    steps: list[tuple[int, bool, int]]  # (split node, goes left, feature) from the root
    zero_fraction: dict[int, float]  # distinct feature -> product of its count ratios


@dataclass(frozen=True)
class _Splits:
    feature: list[int]
    threshold: list[float]
    default_left: list[bool]
    missing: list[int]  # 0 None, 1 Zero, 2 NaN
    categories: list[frozenset[int] | None]  # categories that go left (categorical splits)


class PathTables:
    """A LightGBM model's TreeSHAP tables; `contributions(rows)` is (n, features + 1)."""

    def __init__(self, n_features: int, splits: _Splits, leaves: list[_Leaf], bias: float):
        self.n_features = n_features
        self.bias = bias
        self._splits_arrays(splits)
        self._paths_arrays(leaves)

    @classmethod
    def build(cls, booster: Any, *, max_entries: int = MAX_TABLE_ENTRIES) -> "PathTables | None":
        """Tables for a single-output LightGBM Booster (the trees its `predict` uses), or
        None when they would exceed `max_entries` (the categories' table too) or the model
        is of a kind they do not cover (several outputs per iteration, linear trees)."""
        model = booster.dump_model()
        if model.get("num_tree_per_iteration", 1) != 1 or model.get("num_class", 1) != 1:
            return None
        splits = _Splits([], [], [], [], [])
        leaves: list[_Leaf] = []
        bias = 0.0
        for tree in model["tree_info"]:
            root = tree["tree_structure"]
            if "split_index" not in root:
                if "leaf_const" in root:  # a linear tree
                    return None
                bias += root["leaf_value"]
                continue
            tree_leaves: list[tuple[int, _Leaf, int]] = []
            if not _walk(root, [], {}, splits, tree_leaves):
                return None
            total = float(root["internal_count"])
            # As LightGBM's Tree::ExpectedValue, in leaf order.
            for _, leaf, count in sorted(tree_leaves, key=lambda item: item[0]):
                bias += (count / total) * leaf.value
            leaves.extend(leaf for _, leaf, _ in tree_leaves)
        entries = sum((1 << len(leaf.zero_fraction)) * len(leaf.zero_fraction) for leaf in leaves)
        # Categorical splits are kept as a dense (splits x categories) table of booleans.
        categories = [max(c) + 1 for c in splits.categories if c]
        if entries > max_entries or len(categories) * max(categories, default=0) > max_entries:
            return None
        return cls(len(model["feature_names"]), splits, leaves, bias)

    # Building ----------------------------------------------------------------------------------

    def _splits_arrays(self, splits: _Splits) -> None:
        self.node_feature = np.asarray(splits.feature, dtype=np.intp)
        self.node_threshold = np.asarray(splits.threshold, dtype=float)
        default_left = np.asarray(splits.default_left, dtype=bool)
        missing = np.asarray(splits.missing, dtype=np.int8)
        categorical = np.asarray([c is not None for c in splits.categories], dtype=bool)
        numerical = ~categorical
        # A missing value (NaN) is read as 0.0 unless the split's missing type is NaN.
        self.nan_as_zero = np.flatnonzero(numerical & (missing != 2))
        self.zero_left = self.node_threshold[self.nan_as_zero] >= 0.0
        self.nan_default = np.flatnonzero(numerical & (missing == 2))
        self.zero_default = np.flatnonzero(numerical & (missing == 1))
        self.default_left = default_left
        self.cat_nodes = np.flatnonzero(categorical)
        width = 1 + max((max(c) for c in splits.categories if c), default=0)
        self.cat_left = np.zeros((len(self.cat_nodes), width), dtype=bool)
        for row, node in enumerate(self.cat_nodes):
            self.cat_left[row, sorted(splits.categories[node])] = True  # type: ignore[arg-type]
        self.cat_rows = np.arange(len(self.cat_nodes))

    def _paths_arrays(self, leaves: list[_Leaf]) -> None:
        """The matrices that turn a row's decisions into each leaf's pattern, and where each
        slot (a leaf and one of its distinct features) finds its value for a pattern. Slots
        are ordered by feature, so that a row's values add up per feature in one pass."""
        self.table, leaf_base = _tables(leaves)
        slot_leaf: list[int] = []
        slot_feature: list[int] = []
        slot_j: list[int] = []
        step_slot: list[int] = []
        step_node: list[int] = []
        step_left: list[bool] = []
        for index, leaf in enumerate(leaves):
            features = list(leaf.zero_fraction)  # distinct, in path order
            first = len(slot_leaf)
            for k, feature in enumerate(features):
                slot_leaf.append(index)
                slot_feature.append(feature)
                slot_j.append(k)
            for node, goes_left, feature in leaf.steps:
                step_slot.append(first + features.index(feature))
                step_node.append(node)
                step_left.append(goes_left)
        order = np.argsort(np.asarray(slot_feature), kind="stable")
        position = np.empty(len(order), dtype=np.intp)
        position[order] = np.arange(len(order))
        self.slot_leaf = np.asarray(slot_leaf, dtype=np.intp)[order]
        width = np.asarray([len(leaf.zero_fraction) for leaf in leaves], dtype=np.int64)
        self.slot_width = width[self.slot_leaf].astype(np.int32)
        j = np.asarray(slot_j, dtype=np.int64)[order]
        self.slot_offset = (np.asarray(leaf_base, dtype=np.int64)[self.slot_leaf] + j).astype(
            np.int32
        )
        self.features_used, self.feature_start = np.unique(
            np.asarray(slot_feature)[order], return_index=True
        )
        # A step is cold when the row goes the other way: left for a step to the right (+1),
        # not left for a step to the left (1 - left). A slot is hot when none of its steps is
        # cold; a leaf's pattern has bit j set when its j-th slot is hot.
        left = np.asarray(step_left, dtype=bool)
        rows = position[np.asarray(step_slot, dtype=np.intp)]
        shape = (len(order), len(self.node_feature))
        self.cold_steps = sparse.csr_matrix(
            (np.where(left, -1.0, 1.0), (rows, np.asarray(step_node))), shape=shape
        )
        self.cold_base = np.bincount(rows, weights=left.astype(float), minlength=len(order))
        self.pattern_bits = sparse.csr_matrix(
            (2.0**j, (self.slot_leaf, np.arange(len(order)))), shape=(len(leaves), len(order))
        )

    # Rows --------------------------------------------------------------------------------------

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        out = np.zeros((len(rows), self.n_features + 1))
        out[:, -1] = self.bias
        if not len(self.features_used):
            return out
        # The splits decided for a block of rows at once (rows x splits: kept small, 2 MB for
        # the benchmark's model); the lookups row by row: with a few rows at once, scipy's
        # sparse products and numpy's 2-D indexing cost more per row than one at a time.
        for start in range(0, len(rows), DECIDE_BLOCK):
            block = self._goes_left(rows[start : start + DECIDE_BLOCK])
            for i, left in enumerate(block, start):
                values = self.table[self._lookups(left)]
                out[i, self.features_used] = np.add.reduceat(values, self.feature_start)
        return out

    def _goes_left(self, rows: np.ndarray) -> np.ndarray:
        """(rows, splits): whether each row goes left at each split, as LightGBM's
        NumericalDecision and CategoricalDecision decide."""
        value = rows[:, self.node_feature]
        left = value <= self.node_threshold  # NaN compares False: fixed below
        missing = np.isnan(value)
        if missing.any():
            left[:, self.nan_as_zero] = np.where(
                missing[:, self.nan_as_zero], self.zero_left, left[:, self.nan_as_zero]
            )
            left[:, self.nan_default] = np.where(
                missing[:, self.nan_default],
                self.default_left[self.nan_default],
                left[:, self.nan_default],
            )
        if len(self.zero_default):
            zero = missing[:, self.zero_default] | (
                np.abs(value[:, self.zero_default]) <= ZERO_THRESHOLD
            )
            left[:, self.zero_default] = np.where(
                zero, self.default_left[self.zero_default], left[:, self.zero_default]
            )
        if len(self.cat_nodes):
            # LightGBM truncates the value to an int (towards zero): a negative one, a
            # missing one and one never seen in training go right.
            category = np.trunc(value[:, self.cat_nodes])
            known = (category >= 0) & (category < self.cat_left.shape[1])
            index = np.where(known, category, 0).astype(np.intp)
            left[:, self.cat_nodes] = known & self.cat_left[self.cat_rows, index]
        return left

    def _lookups(self, left: np.ndarray) -> np.ndarray:
        """Where each slot's value for the row's pattern sits in the table (`left`: the
        row's decision at each split)."""
        cold = self.cold_steps @ left.astype(float)
        cold += self.cold_base
        pattern = self.pattern_bits @ (cold == 0).astype(float)  # per leaf
        index = pattern.astype(np.int32)[self.slot_leaf]
        index *= self.slot_width
        index += self.slot_offset
        return index


def _walk(
    node: dict[str, Any],
    steps: list[tuple[int, bool, int]],
    zero_fraction: dict[int, float],
    splits: _Splits,
    leaves: list[tuple[int, _Leaf, int]],
) -> bool:
    """Record the splits under `node` and its leaves (with their index and count); False for
    a node of a kind the tables do not cover."""
    if "split_index" not in node:
        if "leaf_const" in node:  # a linear tree's leaf
            return False
        leaf = _Leaf(float(node["leaf_value"]), list(steps), dict(zero_fraction))
        leaves.append((int(node["leaf_index"]), leaf, int(node["leaf_count"])))
        return True
    index = len(splits.feature)
    feature = int(node["split_feature"])
    splits.feature.append(feature)
    splits.default_left.append(bool(node["default_left"]))
    splits.missing.append(_MISSING_TYPES[node["missing_type"]])
    if node["decision_type"] == "==":
        splits.threshold.append(0.0)
        splits.categories.append(frozenset(int(c) for c in str(node["threshold"]).split("||")))
    elif node["decision_type"] == "<=":
        splits.threshold.append(float(node["threshold"]))
        splits.categories.append(None)
    else:
        return False
    count = float(node["internal_count"])
    for child, left in ((node["left_child"], True), (node["right_child"], False)):
        child_count = float(
            child["internal_count"] if "split_index" in child else child["leaf_count"]
        )
        fractions = dict(zero_fraction)
        fractions[feature] = fractions.get(feature, 1.0) * (child_count / count)
        if not _walk(child, [*steps, (index, left, feature)], fractions, splits, leaves):
            return False
    return True


def _tables(leaves: list[_Leaf]) -> tuple[np.ndarray, list[int]]:
    """Every leaf's (2^u, u) values, flattened one leaf after another, and where each leaf's
    begin. Leaves with the same u are computed together."""
    by_width: dict[int, list[int]] = {}
    for index, leaf in enumerate(leaves):
        by_width.setdefault(len(leaf.zero_fraction), []).append(index)
    parts, base, offset = [], [0] * len(leaves), 0
    for u, members in sorted(by_width.items()):
        values = np.array([leaves[i].value for i in members])
        zeros = np.array([list(leaves[i].zero_fraction.values()) for i in members]).reshape(
            len(members), u
        )
        block = _width_tables(values, zeros)  # (members, 2^u, u)
        size = (1 << u) * u
        for k, i in enumerate(members):
            base[i] = offset + k * size
        parts.append(block.reshape(-1))
        offset += len(members) * size
    table = np.concatenate(parts) if parts else np.zeros(0)
    return table, base


def _width_tables(values: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    """(leaves, 2^u, u): for leaves of u distinct features, the value each feature gets for
    each pattern of o's (bit j of the pattern is o_j)."""
    n, u = zeros.shape
    patterns = 1 << u
    ones = ((np.arange(patterns)[:, None] >> np.arange(u)[None, :]) & 1).astype(float)
    weights = np.array(
        [math.factorial(s) * math.factorial(u - 1 - s) / math.factorial(u) for s in range(u)]
    )
    out = np.empty((n, patterns, u))
    for j in range(u):
        # The product over the other features of (z_i + o_i t): coefficient s of t sums the
        # subsets S of size s.
        poly = np.zeros((n, patterns, u))
        poly[:, :, 0] = 1.0
        for i in range(u):
            if i == j:
                continue
            shifted = poly[:, :, :-1] * ones[None, :, i, None]
            poly *= zeros[:, i, None, None]
            poly[:, :, 1:] += shifted
        weighted = poly @ weights
        out[:, :, j] = values[:, None] * (ones[None, :, j] - zeros[:, None, j]) * weighted
    return out
