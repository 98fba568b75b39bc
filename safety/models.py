"""Medical groups (defined by code sets, so membership follows from the coded record),
contraindication rules versioned as a set, and clinicians' standing approvals."""

from django.conf import settings
from django.db import models

from core.models import BaseModel


class MedicalGroup(BaseModel):
    slug = models.SlugField(max_length=48, unique=True)
    name = models.CharField(max_length=120)
    icd10_prefixes = models.JSONField(default=list, blank=True)
    atc_prefixes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["slug"]
        # Granted per group with django-guardian: a clinician reviews the groups they hold
        # this permission on.
        permissions = [("review_group", "Can review nudges for this medical group")]

    def __str__(self) -> str:
        return self.name


class GroupMembership(BaseModel):
    """Derived: rewritten by patients_groups_refresh from the patient's codes, never by hand."""

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="group_memberships"
    )
    group = models.ForeignKey(MedicalGroup, on_delete=models.CASCADE, related_name="memberships")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "group"], name="membership_unique")
        ]


class RuleSetStatus(models.TextChoices):
    DRAFT = "draft", "Draft (editable)"
    PROPOSED = "proposed", "Proposed, awaiting a second sign-off"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class RuleSet(BaseModel):
    """A version of the whole rule catalogue. Rules are edited only in a draft; a proposed
    draft becomes active when a second person signs it off, and the previously active set is
    retired. Exactly one set is active at a time (the partial unique constraint)."""

    version = models.PositiveIntegerField(unique=True)
    status = models.CharField(
        max_length=12, choices=RuleSetStatus.choices, default=RuleSetStatus.DRAFT
    )
    note = models.CharField(max_length=300, blank=True)
    source_file_sha256 = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    proposed_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    dry_run = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="active"),
                name="ruleset_one_active",
            )
        ]

    def __str__(self) -> str:
        return f"Rule set v{self.version} ({self.get_status_display()})"


class RuleAction(models.TextChoices):
    BLOCK = "block", "Block"
    REVIEW = "review", "Needs clinician review"
    ALLOW_WITH_NOTE = "allow_with_note", "Allow with a note to the patient"


class Severity(models.TextChoices):
    HIGH = "high"
    MODERATE = "moderate"
    LOW = "low"


class Rule(BaseModel):
    """One contraindication rule of a rule set. A template matches when it has any of
    `tags` (if given) and its category, goal and intensity are in the lists given."""

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="rules")
    code = models.CharField(max_length=40, help_text="Stable id, e.g. HF-FLUIDS-01.")
    groups = models.ManyToManyField(MedicalGroup, related_name="rules")
    tags = models.JSONField(default=list, blank=True)
    categories = models.JSONField(default=list, blank=True)
    goals = models.JSONField(default=list, blank=True)
    intensities = models.JSONField(default=list, blank=True)
    action = models.CharField(max_length=16, choices=RuleAction.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    rationale = models.TextField(max_length=2000)
    note_to_patient = models.CharField(max_length=200, blank=True)
    source_title = models.CharField(max_length=300, blank=True)
    source_publisher = models.CharField(max_length=200, blank=True)
    source_url = models.URLField(max_length=500, blank=True)
    source_summary = models.TextField(max_length=2000, blank=True)
    verified = models.BooleanField(
        default=False,
        help_text="The source was read and supports the rule. An unverified block reviews.",
    )
    revision = models.PositiveIntegerField(default=1)
    effective_from = models.DateField()
    effective_to = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["rule_set", "code"], name="rule_unique_code_in_set"),
            models.CheckConstraint(
                condition=models.Q(effective_to__isnull=True)
                | models.Q(effective_to__gt=models.F("effective_from")),
                name="rule_dates_in_order",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class RuleRevision(BaseModel):
    """History of every change to a rule: who, when, and the fields before and after."""

    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="revisions")
    code = models.CharField(max_length=40)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    change = models.CharField(max_length=12)  # created, edited, deleted
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]


class StandingApproval(BaseModel):
    """A clinician's approval, for one of their medical groups, of one template (by slug) for
    one patient for a while. A review the rules of several groups ask for is covered only
    when each of those groups has one. It lapses at `expires_at`, when another rule set
    becomes active, or when the patient's medical groups change (the rule-set version and the
    group set it was given under are kept and compared)."""

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="standing_approvals"
    )
    template_slug = models.SlugField(max_length=64)
    group = models.ForeignKey(
        MedicalGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    ruleset_version = models.PositiveIntegerField()
    groups_key = models.CharField(max_length=500)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["patient", "expires_at"])]
