"""Clinicians and their decisions on the review queue. Which medical groups a clinician
covers is a django-guardian grant of safety.review_group on each group (clinicians.access)."""

from django.conf import settings
from django.db import models

from core.models import BaseModel
from nudges.models import ReviewRequest


class Clinician(BaseModel):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clinician"
    )

    def __str__(self) -> str:
        return self.user.get_username()


class Verdict(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    ACKNOWLEDGE = "acknowledge", "Acknowledge"


class ReasonCode(models.TextChoices):
    APPROPRIATE = "appropriate", "Appropriate for this patient"
    MONITORED = "monitored", "Appropriate; condition is monitored"
    CONTRAINDICATED = "contraindicated", "Contraindicated for this patient"
    INSUFFICIENT_INFO = "insufficient_info", "Not enough information to approve"
    WRONG_TIMING = "wrong_timing", "Not now for this patient"
    FEEDBACK_NOTED = "feedback_noted", "Patient feedback noted"
    TEMPLATE_ISSUE = "template_issue", "The template itself needs changing"


class ReviewDecision(BaseModel):
    """One clinician's decision on a review request, for one of its medical groups. Unique
    per (request, group): when two clinicians of a group decide at once, one wins."""

    request = models.ForeignKey(
        "nudges.ReviewRequest", on_delete=models.CASCADE, related_name="decisions"
    )
    # None for a request with no group (any clinician may decide it).
    group = models.ForeignKey(
        "safety.MedicalGroup", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    clinician = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_decisions"
    )
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    reason = models.CharField(max_length=20, choices=ReasonCode.choices)
    comment = models.CharField(max_length=500, blank=True)
    ruleset_version = models.PositiveIntegerField(null=True, blank=True)
    standing_days = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "group"], name="decision_one_per_group"),
            models.UniqueConstraint(
                fields=["request"],
                condition=models.Q(group__isnull=True),
                name="decision_one_without_group",
            ),
        ]


class ReviewQueueItem(ReviewRequest):
    """The review queue as clinicians see it in the admin (a proxy of nudges.ReviewRequest)."""

    class Meta:
        proxy = True
        verbose_name = "review queue item"
        verbose_name_plural = "review queue"
