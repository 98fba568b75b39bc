"""The audit log, read only, for superusers and holders of audit.view_auditentry."""

from django.contrib import admin

from audit.models import AuditEntry
from core.admin import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("seq", "created_at", "action", "actor", "short_hash")
    list_filter = ("action",)
    ordering = ("-seq",)
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEntry) -> str:
        return obj.hash[:12]
