"""Pure: the unit of the privacy budget. Budgets are zero-concentrated DP (rho), kept as whole
nano-rho (1e-9) so the ledger adds and compares exactly in the database; a charge is rounded
up, never down. epsilon is shown beside rho at a stated delta, by OpenDP's zCDP to (epsilon,
delta) conversion."""

import functools
import math
from decimal import Decimal, InvalidOperation

from privacy.dp import opendp

NANO = 10**9


class BudgetError(ValueError):
    """A budget that is not a positive number of at most nine decimals' precision."""


def nanorho_parse(value: object) -> int:
    """A budget in rho (number or decimal string) as whole nano-rho, refusing anything that is
    not a positive, finite number of at least one nano-rho."""
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise BudgetError("The budget must be a number (rho), e.g. 0.1.") from None
    if not amount.is_finite() or amount <= 0:
        raise BudgetError("The budget must be greater than 0.")
    nano = int(amount * NANO)
    if nano < 1:
        raise BudgetError("The budget must be at least 0.000000001.")
    return nano


def nanorho_ceil(rho: float) -> int:
    return math.ceil(rho * NANO)


def rho_of(nanorho: int) -> float:
    return nanorho / NANO


@functools.lru_cache(maxsize=1024)
def epsilon_at(rho: float, delta: float) -> float:
    """The epsilon of (epsilon, delta)-DP that rho-zCDP implies, by OpenDP's conversion (tighter
    than the textbook rho + 2 sqrt(rho log(1/delta)), which bounds it from above)."""
    if rho <= 0:
        return 0.0
    dp = opendp()
    unit = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    try:
        # A unit-scale Gaussian at distance d has rho = d^2 / 2.
        profile = dp.c.make_zCDP_to_approxDP(unit).map(math.sqrt(2 * rho))
        return float(profile.epsilon(delta))
    except dp.OpenDPException:  # overflows for absurdly large rho: the textbook bound holds
        return rho + 2 * math.sqrt(rho * math.log(1 / delta))
