"""Medical groups, defined by code sets so that membership follows from the coded record."""

from django.db import models

from core.models import BaseModel


class MedicalGroup(BaseModel):
    slug = models.SlugField(max_length=48, unique=True)
    name = models.CharField(max_length=120)
    icd10_prefixes = models.JSONField(default=list, blank=True)
    atc_prefixes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class GroupMembership(BaseModel):
    """Derived: rewritten by patient_groups_refresh from the patient's codes, never by hand."""

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="group_memberships"
    )
    group = models.ForeignKey(MedicalGroup, on_delete=models.CASCADE, related_name="memberships")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "group"], name="membership_unique")
        ]
