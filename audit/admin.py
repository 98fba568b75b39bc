"""The audit log, read only, for superusers and holders of audit.view_auditentry."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("seq", "created_at", "action", "actor", "short_hash")
    list_filter = ("action",)
    ordering = ("-seq",)
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEntry) -> str:
        return obj.hash[:12]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
