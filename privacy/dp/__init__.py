"""Differentially private reports, pure: no ORM here, so every step can be tested and
benchmarked alone (docs/privacy.md, "Differentially private reports").

OpenDP gates the parts of its library whose proofs are still under review behind features.
The polars integration and the zCDP Gaussian mechanisms we use are among them ("contrib"), so
it is switched on once per process, when `opendp()` first imports the library. "floating-point"
is not needed: every released value is an integer (counts, and sums in fixed point), so no float
sum with its rounding leaks is ever built. "honest-but-curious" stays off.

The library is imported on first use, not with this package: a web process started 56 MB
smaller without it (403 -> 347 MB RSS, docs/benchmarks.md; imported alone, with its own
dependencies, it takes about 140 MB), which the processes that never release a report (the web
workers serving patients, the Celery workers deciding nudges) should not pay."""

import functools
from typing import Any


@functools.cache
def opendp() -> Any:
    """OpenDP's prelude (`dp`), its contrib features switched on."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp
