"""Differentially private reports, pure: no ORM here, so every step can be tested and
benchmarked alone (docs/privacy.md, "Differentially private reports").

OpenDP gates the parts of its library whose proofs are still under review behind features.
The polars integration and the zCDP Gaussian mechanisms we use are among them ("contrib"), so
it is switched on once, when this package is first imported. "floating-point" is not needed:
every released value is an integer (counts, and sums in fixed point), so no float sum with
its rounding leaks is ever built. "honest-but-curious" stays off."""

import opendp.prelude as dp

dp.enable_features("contrib")
