"""The privacy-budget ledger and the released reports (docs/privacy.md)."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from core.models import BaseModel
from privacy.dp.accounting import NANO


class PrivacyBudget(BaseModel):
    """One period's budget: the most privacy loss (zCDP rho, in nano-rho) any one patient may
    suffer from all the reports of that period together. Debited by privacy.ledger before a
    release runs; the check constraint keeps spent <= cap even against a buggy writer."""

    period = models.CharField(max_length=7, unique=True)  # YYYY-MM
    cap_nanorho = models.BigIntegerField()
    spent_nanorho = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-period"]
        constraints = [
            models.CheckConstraint(condition=Q(cap_nanorho__gt=0), name="budget_cap_positive"),
            models.CheckConstraint(
                condition=Q(spent_nanorho__gte=0) & Q(spent_nanorho__lte=F("cap_nanorho")),
                name="budget_spent_within_cap",
            ),
        ]

    def __str__(self) -> str:
        return f"Privacy budget {self.period}"

    @property
    def cap(self) -> float:
        return self.cap_nanorho / NANO

    @property
    def spent(self) -> float:
        return self.spent_nanorho / NANO

    @property
    def remaining_nanorho(self) -> int:
        return self.cap_nanorho - self.spent_nanorho


class Channel(models.TextChoices):
    ADMIN = "admin", "Admin pages"
    API = "api", "API"
    COMMAND = "command", "Command line"


class Release(BaseModel):
    """A released report: the noisy numbers with their intervals and everything needed to say
    how they were made. Stored, so exporting it again costs no budget. Written once, by
    privacy.reports.report_release, in the transaction that debited the budget."""

    report = models.CharField(max_length=40)
    period = models.CharField(max_length=7)
    budget = models.ForeignKey(PrivacyBudget, on_delete=models.PROTECT, related_name="releases")
    requested_nanorho = models.BigIntegerField()
    charged_nanorho = models.BigIntegerField()
    spent_after_nanorho = models.BigIntegerField()  # the period's ledger once this was charged
    cap_nanorho = models.BigIntegerField()
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    request_id = models.UUIDField(null=True, blank=True, unique=True)
    parameters = models.JSONField()
    results = models.JSONField()
    results_sha256 = models.CharField(max_length=64)
    code_version = models.CharField(max_length=80)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["period", "report"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(charged_nanorho__gt=0) & Q(charged_nanorho__lte=F("requested_nanorho")),
                name="release_charge_within_request",
            )
        ]

    def __str__(self) -> str:
        return f"{self.report} {self.period} ({str(self.pk)[:8]})"

    @property
    def charged(self) -> float:
        return self.charged_nanorho / NANO
