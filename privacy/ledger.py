"""The persistent privacy-budget ledger. OpenDP accounts for budget in memory only; this is
where a period's spending survives restarts and concurrent releases.

The invariant: a period's spent never passes its cap. A debit is one conditional UPDATE
(spent = spent + cost WHERE spent + cost <= cap), so concurrent releases serialise on the row
and the loser of a race sees the winner's spending; the check constraint on the table backs it
up. Amounts are whole nano-rho, so sums and comparisons are exact."""

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import F

from core.errors import ApplicationError
from privacy.dp.accounting import BudgetError, nanorho_parse, rho_of
from privacy.dp.periods import Period
from privacy.models import PrivacyBudget


def period_cap_nanorho() -> int:
    try:
        return nanorho_parse(settings.PRIVACY_PERIOD_CAP_RHO)
    except BudgetError as error:
        raise ImproperlyConfigured(f"PRIVACY_PERIOD_CAP_RHO: {error}") from None


def budget_open(*, period: Period) -> PrivacyBudget:
    """The period's ledger row, created with the configured cap on first use (a concurrent
    first use gets the same row: the period is unique)."""
    budget, _ = PrivacyBudget.objects.get_or_create(
        period=period.label, defaults={"cap_nanorho": period_cap_nanorho()}
    )
    return budget


def budget_debit(*, budget: PrivacyBudget, nanorho: int) -> int:
    """Debit `nanorho` from the period, or refuse with 409 and change nothing. Returns the
    period's spent after the debit. Must run inside the transaction that records what the
    budget was spent on: the row stays locked until it commits, and a rollback undoes the
    debit."""
    if not connection.in_atomic_block:
        raise RuntimeError("debit the budget inside the transaction of the release")
    changed = PrivacyBudget.objects.filter(
        pk=budget.pk, spent_nanorho__lte=F("cap_nanorho") - nanorho
    ).update(spent_nanorho=F("spent_nanorho") + nanorho)
    current = PrivacyBudget.objects.get(pk=budget.pk)
    if changed != 1:
        raise ApplicationError(
            f"The budget asked for (rho {rho_of(nanorho):g}) is more than remains for "
            f"{budget.period}: rho {rho_of(current.remaining_nanorho):g} of "
            f"{rho_of(current.cap_nanorho):g}. Nothing was spent.",
            code="budget_exceeded",
            status=409,
            fields={"budget": f"At most {rho_of(current.remaining_nanorho):g} remains."},
        )
    return current.spent_nanorho


@dataclass(frozen=True)
class Balance:
    period: str
    cap_nanorho: int
    spent_nanorho: int

    @property
    def remaining_nanorho(self) -> int:
        return self.cap_nanorho - self.spent_nanorho

    def as_dict(self) -> dict[str, str | float]:
        return {
            "period": self.period,
            "unit": "zCDP rho per patient",
            "cap_rho": rho_of(self.cap_nanorho),
            "spent_rho": rho_of(self.spent_nanorho),
            "remaining_rho": rho_of(self.remaining_nanorho),
        }


def budget_balance(*, period: Period) -> Balance:
    """The period's cap and spending (a period not used yet: nothing spent)."""
    budget = PrivacyBudget.objects.filter(period=period.label).first()
    if budget is None:
        return Balance(period.label, period_cap_nanorho(), 0)
    return Balance(period.label, budget.cap_nanorho, budget.spent_nanorho)
