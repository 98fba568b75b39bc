"""Operator views of the catalogue and deliveries. Read-mostly: deliveries change only through
services, never by editing a row here. Search is by opaque ids only (no health data)."""

from django.contrib import admin

from nudges.models import Decision, Delivery, DeliveryTransition, PushMessage, Template


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ["slug", "version", "goal", "category", "intensity", "is_active"]
    list_filter = ["goal", "category", "intensity", "is_active"]
    search_fields = ["slug"]


class TransitionInline(admin.TabularInline):
    model = DeliveryTransition
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "from_state", "to_state", "actor", "reason"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "template", "state", "created_at", "due_at", "expires_at"]
    list_filter = ["state"]
    list_select_related = ["template"]
    search_fields = ["=id"]
    inlines = [TransitionInline]
    show_full_result_count = False


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ["id", "outcome", "reason", "policy_version", "template", "created_at"]
    list_filter = ["outcome", "reason", "policy_version"]
    list_select_related = ["template"]
    search_fields = ["=id"]
    show_full_result_count = False


@admin.register(PushMessage)
class PushMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "state", "attempts", "next_attempt_at", "last_error", "sent_at"]
    list_filter = ["state"]
