"""Operator views of the catalogue and deliveries. Read-mostly: deliveries change only through
services, never by editing a row here. Search is by opaque ids only (no health data)."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from core.admin import ReadOnlyAdmin
from core.errors import ApplicationError
from nudges.models import (
    Decision,
    Delivery,
    DeliveryTransition,
    PushMessage,
    Template,
    TemplateStatus,
)
from nudges.services.catalogue import template_signoff, template_stop


def _has_role(request: HttpRequest, *roles: str) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.groups.filter(name__in=roles).exists())


class StopForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.Textarea({"rows": 2}))


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    """The catalogue. A version is used only once a clinician signs it off; an edit is a new
    version (pending until signed off); any version in use can be stopped at once."""

    list_display = ["slug", "version", "title", "goal", "category", "intensity", "status"]
    list_filter = ["status", "goal", "category", "intensity"]
    search_fields = ["slug", "title"]
    readonly_fields = [
        "status",
        "signed_off_by",
        "signed_off_at",
        "stopped_by",
        "stopped_at",
        "stop_reason",
    ]
    actions = ["sign_off", "emergency_stop"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _has_role(request, "clinician", "safety-lead") or request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return _has_role(request, "clinician", "safety-lead")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Only a version awaiting sign-off can be edited; a signed-off one is immutable."""
        if not _has_role(request, "clinician", "safety-lead"):
            return False
        return obj is None or obj.status == TemplateStatus.PENDING

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Template, form: Any, change: bool) -> None:
        if not change:
            latest = Template.objects.filter(slug=obj.slug).order_by("-version").first()
            obj.version = (latest.version + 1) if latest else 1
            obj.status = TemplateStatus.PENDING
        super().save_model(request, obj, form, change)

    @admin.action(description="Sign off the selected versions (puts them in use)")
    def sign_off(self, request: HttpRequest, queryset: QuerySet) -> None:
        if not _has_role(request, "clinician"):
            raise PermissionDenied
        user = request.user
        assert isinstance(user, User)  # _has_role admits active staff only
        for template in queryset:
            try:
                template_signoff(template=template, by=user)
                self.message_user(request, f"Signed off {template}.")
            except ApplicationError as error:
                self.message_user(request, f"{template}: {error.message}", messages.ERROR)

    @admin.action(description="Emergency stop: take the selected templates out of use now")
    def emergency_stop(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if not _has_role(request, "clinician", "safety-lead"):
            raise PermissionDenied
        form = StopForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            user = request.user
            assert isinstance(user, User)  # _has_role admits active staff only
            for template in queryset:
                try:
                    blocked = template_stop(
                        template=template, by=user, reason=form.cleaned_data["reason"]
                    )
                    self.message_user(request, f"Stopped {template}; {blocked} nudge(s) blocked.")
                except ApplicationError as error:
                    self.message_user(request, f"{template}: {error.message}", messages.ERROR)
            return None
        return TemplateResponse(
            request,
            "admin/nudges/template_stop.html",
            {
                **self.admin_site.each_context(request),
                "title": "Emergency stop",
                "items": queryset,
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )


class TransitionInline(admin.TabularInline):
    model = DeliveryTransition
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "from_state", "to_state", "actor", "reason"]

    def has_add_permission(self, request, obj=None) -> bool:
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
