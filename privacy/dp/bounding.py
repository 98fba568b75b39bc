"""Pure: contribution bounding, vectorised in polars. After it, each patient adds at most
`per_group` rows to any one cell (a combination of the report's key columns) and touches at
most `num_groups` cells: exactly the bounds OpenDP is told (dp.polars.Bound), so the sensitivity
it derives holds. Which rows and cells a patient keeps depends on that patient's own rows and
a salt drawn afresh for each release, never on other patients, so removing one patient changes
nobody else's rows."""

import polars as pl

PATIENT = "patient"


def contributions_bound(
    rows: pl.LazyFrame,
    *,
    keys: list[str],
    per_group: int,
    num_groups: int,
    salt: int,
    order: str | None = None,
) -> pl.LazyFrame:
    """Keep each patient's first `per_group` rows per cell (by `order`, else as given) and
    `num_groups` of their cells, chosen by a salted hash (an unbiased choice when a patient
    has more: a fixed order would always drop the same cells)."""
    cell = [PATIENT, *keys]
    if order is not None:
        rows = rows.sort(order, PATIENT)
    if per_group == 1:
        rows = rows.unique(subset=cell, keep="first", maintain_order=order is not None)
    else:
        rows = rows.filter(pl.int_range(pl.len()).over(cell) < per_group)
    rows = rows.collect().lazy()  # computed once, read by both branches below
    cells = rows.select(cell) if per_group == 1 else rows.select(cell).unique()
    # Only patients with more cells than allowed lose any; the others pass untouched.
    heavy = cells.group_by(PATIENT).len().filter(pl.col("len") > num_groups).select(PATIENT)
    # The choice hashes the patient's own identifier (as text: a categorical's code would
    # depend on the other patients) with the cell and the salt; sorting by the keys after
    # the hash keeps distinct cells distinct even if two hashes collide.
    mixed = pl.struct(pl.col(PATIENT).cast(pl.String), *keys).hash(seed=salt)
    kept = (
        cells.join(heavy, on=PATIENT, how="semi")
        .with_columns(_h=mixed)
        .sort([PATIENT, "_h", *keys])
        .group_by(PATIENT, maintain_order=True)
        .head(num_groups)
        .select(cell)
    )
    return pl.concat(
        [
            rows.join(heavy, on=PATIENT, how="anti"),
            rows.join(kept, on=cell, how="semi", nulls_equal=True),
        ]
    )


def cells_per_patient(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per patient: the most rows in one cell and the number of cells (for checks)."""
    per_cell = rows.group_by([PATIENT, *keys]).len()
    return per_cell.group_by(PATIENT).agg(most_in_a_cell=pl.col("len").max(), cells=pl.len())
