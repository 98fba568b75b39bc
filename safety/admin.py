"""Medical groups in the admin (read-only: they load from the reviewed file). Rule sets and
rules are governed in clinicians/admin.py, since activating a set re-checks deliveries."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from safety.models import MedicalGroup


@admin.register(MedicalGroup)
class MedicalGroupAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "icd10_prefixes", "atc_prefixes"]
    search_fields = ["slug", "name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
