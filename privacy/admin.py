"""The compliance officer's pages in the Django admin: the report catalogue with its dry run
and release, the released reports with a chart of each and their signed exports, and the
privacy-budget ledger. Only compliance officers see any of it; to anyone else every page here
answers 404. Nothing here shows a raw row: only released (noisy) numbers."""

import datetime as dt
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from core.admin import ReadOnlyAdmin
from core.errors import ApplicationError
from privacy.access import budgets_for_officer, is_compliance_officer, releases_for_officer
from privacy.charts import chart_svg
from privacy.dp.accounting import epsilon_at, rho_of
from privacy.dp.catalogue import REPORTS
from privacy.models import Channel, PrivacyBudget, Release
from privacy.reports import catalogue, release_export, report_preview, report_release


class ComplianceOnly:
    """Visible to compliance officers only (read-only with core.admin.ReadOnlyAdmin), and 404
    (not 403) for everyone else, so the pages reveal nothing to them."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_compliance_officer(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_compliance_officer(request.user)

    def _guard(self, request: HttpRequest) -> None:
        if not is_compliance_officer(request.user):
            raise Http404

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        self._guard(request)
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        self._guard(request)
        return super().history_view(request, object_id, extra_context)  # type: ignore[misc]

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        raise Http404


def _previous_month() -> str:
    first = timezone.now().date().replace(day=1)
    last = first - dt.timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


class ReportForm(forms.Form):
    report = forms.ChoiceField(choices=[(s.name, s.title) for s in REPORTS.values()])
    period = forms.CharField(max_length=7, help_text="A calendar month, YYYY-MM.")
    budget = forms.CharField(
        max_length=24, initial="0.1", help_text="zCDP rho to spend on this report."
    )
    request_id = forms.UUIDField(required=False, widget=forms.HiddenInput)


@admin.register(Release)
class ReleaseAdmin(ComplianceOnly, ReadOnlyAdmin):
    list_display = ["created_at", "title_shown", "period", "rho_shown", "released_by", "channel"]
    list_filter = ["report", "period", "channel"]
    list_select_related = ["released_by"]
    ordering = ["-created_at"]
    change_list_template = "privacy/admin/release_changelist.html"

    def get_queryset(self, request: HttpRequest) -> Any:
        return releases_for_officer(request.user)

    @admin.display(description="report")
    def title_shown(self, obj: Release) -> str:
        return obj.parameters.get("title", obj.report)

    @admin.display(description="rho (epsilon)")
    def rho_shown(self, obj: Release) -> str:
        loss = obj.parameters["privacy_loss"]
        return f"{loss['rho']:g} ({loss['epsilon']:.3g} at delta {loss['delta']:g})"

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("catalogue/", view(self.catalogue_view), name="privacy_release_catalogue"),
            path(
                "<path:object_id>/export/<str:fmt>/",
                view(self.export_view),
                name="privacy_release_export",
            ),
        ] + super().get_urls()

    def _release(self, request: HttpRequest, object_id: str) -> Release:
        self._guard(request)
        release = self.get_object(request, unquote(object_id))
        if release is None:
            raise Http404
        return release

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        release = self._release(request, object_id)
        p = release.parameters
        columns = p["columns"]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{p['title']} — {release.period}",
            "release": release,
            "loss": p["privacy_loss"],
            "chart": mark_safe(  # noqa: S308 - our own SVG, every text in it escaped
                chart_svg(release.results, keys=p["keys"], value=p["headline"], title=p["title"])
            ),
            "columns": columns,
            "rows": [[row[c] for c in columns] for row in release.results],
            "exports": [
                (fmt, reverse("admin:privacy_release_export", args=[release.pk, fmt]))
                for fmt in ("csv", "json", "html")
            ],
        }
        return TemplateResponse(request, "privacy/admin/release_detail.html", context)

    def export_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse:
        release = self._release(request, object_id)
        try:
            export = release_export(release=release, fmt=fmt)
        except ApplicationError:
            raise Http404 from None
        response = HttpResponse(export.content, content_type=export.content_type)
        disposition = "inline" if fmt == "html" else "attachment"
        response["Content-Disposition"] = f'{disposition}; filename="{export.filename}"'
        return response

    def catalogue_view(self, request: HttpRequest) -> HttpResponse:
        """GET: the catalogue and the form. POST preview: the dry run (nothing spent), with a
        button to release exactly that. POST release: spend and release, then show it."""
        self._guard(request)
        preview = None
        if request.method == "POST":
            form = ReportForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    if "release" in request.POST:
                        release = report_release(
                            report=data["report"],
                            period=data["period"],
                            budget=data["budget"],
                            by=request.user,
                            channel=Channel.ADMIN,
                            request_id=data["request_id"] or uuid.uuid4(),
                        )
                        self.message_user(request, "Released; the budget has been debited.")
                        return HttpResponseRedirect(
                            reverse("admin:privacy_release_change", args=[release.pk])
                        )
                    preview = report_preview(
                        report=data["report"], period=data["period"], budget=data["budget"]
                    )
                    form = ReportForm(initial={**data, "request_id": uuid.uuid4()})
                except ApplicationError as error:
                    for field, message in error.fields.items():
                        if field in form.fields:
                            form.add_error(field, message)
                    self.message_user(request, error.message, messages.ERROR)
        else:
            form = ReportForm(initial={"period": _previous_month(), "budget": "0.1"})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Report catalogue: preview and release",
            "form": form,
            "catalogue": catalogue(),
            "preview": preview,
        }
        return TemplateResponse(request, "privacy/admin/catalogue.html", context)


@admin.register(PrivacyBudget)
class PrivacyBudgetAdmin(ComplianceOnly, ReadOnlyAdmin):
    list_display = ["period", "cap_shown", "spent_shown", "remaining_shown", "epsilon_shown"]
    ordering = ["-period"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return budgets_for_officer(request.user)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        self._guard(request)
        if self.get_object(request, unquote(object_id)) is None:
            raise Http404
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="cap (rho)")
    def cap_shown(self, obj: PrivacyBudget) -> str:
        return f"{obj.cap:g}"

    @admin.display(description="spent (rho)")
    def spent_shown(self, obj: PrivacyBudget) -> str:
        return f"{obj.spent:g}"

    @admin.display(description="remaining (rho)")
    def remaining_shown(self, obj: PrivacyBudget) -> str:
        return f"{rho_of(obj.remaining_nanorho):g}"

    @admin.display(description="spent as epsilon")
    def epsilon_shown(self, obj: PrivacyBudget) -> str:
        delta = settings.PRIVACY_DELTA
        return f"{epsilon_at(obj.spent, delta):.3g} (delta {delta:g})"
