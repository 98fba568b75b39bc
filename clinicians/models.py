"""Clinicians and the medical groups they cover."""

from django.conf import settings
from django.db import models

from core.models import BaseModel


class Clinician(BaseModel):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clinician"
    )
    groups = models.ManyToManyField("safety.MedicalGroup", related_name="clinicians", blank=True)

    def __str__(self) -> str:
        return self.user.get_username()
