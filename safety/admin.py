"""Medical groups in the admin (read-only: they load from the reviewed file). Rule sets and
rules are governed in clinicians/admin.py, since activating a set re-checks deliveries."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from safety.models import MedicalGroup


@admin.register(MedicalGroup)
class MedicalGroupAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "icd10_prefixes", "atc_prefixes"]
    search_fields = ["slug", "name"]
