"""The clinicians' review queue, clinician accounts, and rule-set governance in the Django
admin. The queue is scoped to the medical groups the clinician covers: get_queryset is the
scoping selector, the permission methods are overridden, every admin URL of an item outside
the scope answers 404, and every action re-checks each selected row in the service."""

import datetime as dt
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from clinicians.access import clinician_groups_set, covered_groups, is_clinician
from clinicians.access import review_requests_for_clinician as scoped
from clinicians.governance import ruleset_activate, ruleset_submit
from clinicians.models import Clinician, ReasonCode, ReviewDecision, ReviewQueueItem, Verdict
from clinicians.roles import SAFETY_LEAD
from clinicians.services import REASONS, VERDICTS, review_decide, reviews_decide
from core.admin import ReadOnlyAdmin
from core.errors import ApplicationError
from nudges.models import ReviewKind, ReviewState
from safety.models import MedicalGroup, Rule, RuleRevision, RuleSet, RuleSetStatus
from safety.rules import CATEGORIES, GOALS, INTENSITIES, validate_rule
from safety.services import (
    RULE_FIELDS,
    rule_delete,
    rule_save,
    ruleset_discard,
    ruleset_draft_create,
)


def _signed_in(request: HttpRequest) -> User:
    """The user to name in a service call. admin_view lets only active staff reach an admin
    view or action, so the anonymous case cannot arise there."""
    user = request.user
    if not user.is_authenticated:
        raise PermissionDenied
    return user


# The review queue ---------------------------------------------------------------------------


class GroupFilter(admin.SimpleListFilter):
    """Only the groups the clinician covers; the counts come from the scoped queryset."""

    title = "medical group"
    parameter_name = "group"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(g.slug, g.name) for g in covered_groups(request.user)] + [
            ("none", "No group (any clinician)")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "none":
            return queryset.filter(groups__isnull=True)
        if self.value():
            return queryset.filter(groups__slug=self.value())
        return queryset


class WaitingFilter(admin.SimpleListFilter):
    title = "time waiting"
    parameter_name = "waiting"
    SPANS = {"over_24h": 24, "over_4h": 4}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("over_24h", "Over 24 hours"), ("over_4h", "Over 4 hours")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        hours = self.SPANS.get(self.value() or "")
        if hours is None:
            return queryset
        return queryset.filter(created_at__lte=timezone.now() - dt.timedelta(hours=hours))


class StateFilter(admin.SimpleListFilter):
    """Pending items by default: the queue is what still needs a decision."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.value, s.label) for s in ReviewState] + [("all", "All")]

    def choices(self, changelist: Any):
        current = self.value() or ReviewState.PENDING.value
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value() or ReviewState.PENDING.value
        return queryset if value == "all" else queryset.filter(state=value)


class DecisionForm(forms.Form):
    reason = forms.ChoiceField(choices=ReasonCode.choices)
    comment = forms.CharField(required=False, max_length=500, widget=forms.Textarea({"rows": 2}))
    standing_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=90,
        help_text="Approve this template for this patient for N days (lapses on a new rule "
        "set or a change of the patient's groups).",
    )

    def __init__(self, *args: Any, verdict: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reasons = REASONS[Verdict(verdict)]
        reason_field = cast(forms.ChoiceField, self.fields["reason"])  # declared above
        reason_field.choices = [(r.value, r.label) for r in ReasonCode if r in reasons]
        if verdict != Verdict.APPROVE:
            del self.fields["standing_days"]


@admin.register(ReviewQueueItem)
class ReviewQueueAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "waiting",
        "kind",
        "severity",
        "groups_shown",
        "template_shown",
        "patient_shown",
        "state",
    ]
    list_filter = [StateFilter, GroupFilter, "severity", WaitingFilter, "kind"]
    list_select_related = ["delivery__template", "patient"]
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.ALLOW  # counts on request (?_facets=1), scoped like the list
    ordering = ["created_at"]
    actions = ["approve_selected", "reject_selected", "acknowledge_selected"]
    change_form_template = "admin/clinicians/review_item.html"

    # Scope and permissions ---------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            scoped(request.user)
            .select_related("delivery__template", "patient")
            .prefetch_related("groups")
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_clinician(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not is_clinician(request.user):
            return False
        return obj is None or scoped(request.user).filter(pk=obj.pk).exists()

    def _in_scope(self, request: HttpRequest, object_id: str) -> ReviewQueueItem:
        """The item, or 404 for one that does not exist or is outside the clinician's groups
        (the admin would otherwise redirect with a message that it does not exist)."""
        if not is_clinician(request.user):
            raise Http404
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        return obj

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        item = self._in_scope(request, object_id)
        detail = {"review": str(item.pk)}
        record(AuditAction.PATIENT_FACTS_VIEWED, request.user, item.patient, detail)
        context = {**(extra_context or {}), **self._detail(request, item)}
        return super().change_view(request, object_id, form_url, context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        self._in_scope(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        self._in_scope(request, object_id)
        return super().delete_view(request, object_id, extra_context)

    def get_urls(self):
        decide = self.admin_site.admin_view(self.decide_view)
        return [
            path("<path:object_id>/decide/", decide, name="clinicians_review_decide")
        ] + super().get_urls()

    # django-stubs 6 adds Django 6's `action_location` parameter; the installed Django 5.2
    # neither passes nor accepts it.
    def response_action(  # type: ignore[override]
        self, request: HttpRequest, queryset: QuerySet
    ) -> HttpResponse | None:
        """An action's POST naming an item outside the clinician's scope answers 404, rather
        than silently acting on the rest."""
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if selected and scoped(request.user).filter(pk__in=selected).count() != len(set(selected)):
            raise Http404
        return super().response_action(request, queryset)

    # List columns ------------------------------------------------------------------------

    @admin.display(description="waiting")
    def waiting(self, obj: ReviewQueueItem) -> str:
        hours = (timezone.now() - obj.created_at).total_seconds() / 3600
        return f"{hours:.0f} h" if hours >= 1 else f"{hours * 60:.0f} min"

    @admin.display(description="groups")
    def groups_shown(self, obj: ReviewQueueItem) -> str:
        return ", ".join(g.name for g in obj.groups.all()) or "any clinician"

    @admin.display(description="nudge")
    def template_shown(self, obj: ReviewQueueItem) -> str:
        return obj.delivery.template.title

    @admin.display(description="patient")
    def patient_shown(self, obj: ReviewQueueItem) -> str:
        return obj.patient.pseudonym

    # The item page -----------------------------------------------------------------------

    def _detail(self, request: HttpRequest, item: ReviewQueueItem) -> dict[str, Any]:
        patient, delivery = item.patient, item.delivery
        receipt = delivery.decision.receipt
        verdicts = sorted(VERDICTS[ReviewKind(item.kind)])
        return {
            "item": item,
            "patient": patient,
            "patient_groups": [m.group for m in patient.group_memberships.select_related("group")],
            "conditions": list(patient.conditions.values_list("code", flat=True)),
            "medications": list(patient.medications.values_list("code", flat=True)),
            "agenda": list(patient.goals.values_list("goal", "weight")),
            "template": delivery.template,
            "delivery": delivery,
            "engine": {
                "policy": receipt.get("policy", {}),
                "propensity": receipt.get("propensity"),
                "score": receipt.get("chosen_score"),
                "candidates": len(receipt.get("candidates", {}).get("template", [])),
                "no_nudge": receipt.get("no_nudge_probability"),
                "why": delivery.why,
                "explanation": receipt.get("explanation"),
            },
            "decisions": item.decisions.select_related("group", "clinician"),
            "forms": [(v, Verdict(v).label, DecisionForm(verdict=v)) for v in verdicts]
            if item.state == ReviewState.PENDING
            else [],
            "decide_url": reverse("admin:clinicians_review_decide", args=[item.pk]),
        }

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        item = self._in_scope(request, object_id)
        if request.method != "POST":
            return HttpResponseRedirect(
                reverse("admin:clinicians_reviewqueueitem_change", args=[item.pk])
            )
        verdict = request.POST.get("verdict", "")
        if verdict not in Verdict.values:
            raise Http404
        form = DecisionForm(request.POST, verdict=verdict)
        if not form.is_valid():
            messages.error(request, f"Not decided: {form.errors.as_text()}")
        else:
            try:
                result = review_decide(
                    clinician=_signed_in(request),
                    request_id=item.pk,
                    verdict=verdict,
                    reason=form.cleaned_data["reason"],
                    comment=form.cleaned_data.get("comment", ""),
                    standing_days=form.cleaned_data.get("standing_days"),
                )
                messages.success(
                    request,
                    f"{Verdict(verdict).label}d for {', '.join(result.groups) or 'the item'}; "
                    f"the item is {result.request_state}, the nudge {result.delivery_state}.",
                )
            except ApplicationError as error:
                messages.error(request, error.message)
        return HttpResponseRedirect(
            reverse("admin:clinicians_reviewqueueitem_change", args=[item.pk])
        )

    # Bulk actions ------------------------------------------------------------------------

    def _bulk(self, request: HttpRequest, queryset: QuerySet, verdict: str) -> HttpResponse | None:
        if "confirm" in request.POST:
            form = DecisionForm(request.POST, verdict=verdict)
            if form.is_valid():
                try:
                    results = reviews_decide(
                        clinician=_signed_in(request),
                        request_ids=list(queryset.values_list("pk", flat=True)),
                        verdict=verdict,
                        reason=form.cleaned_data["reason"],
                        comment=form.cleaned_data.get("comment", ""),
                    )
                except ApplicationError as error:
                    if error.status == 404:
                        raise Http404 from None
                    self.message_user(request, error.message, messages.ERROR)
                    return None
                self.message_user(request, f"{Verdict(verdict).label}d {len(results)} item(s).")
                return None
        else:
            form = DecisionForm(verdict=verdict)
        return TemplateResponse(
            request,
            "admin/clinicians/review_bulk.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{Verdict(verdict).label} {queryset.count()} item(s)",
                "items": queryset,
                "form": form,
                "action": request.POST.get("action"),
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Approve the selected items")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._bulk(request, queryset, Verdict.APPROVE)

    @admin.action(description="Reject the selected items")
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._bulk(request, queryset, Verdict.REJECT)

    @admin.action(description="Acknowledge the selected patient feedback")
    def acknowledge_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._bulk(request, queryset, Verdict.ACKNOWLEDGE)


# Clinician accounts -------------------------------------------------------------------------


class ClinicianForm(forms.ModelForm):
    covers = forms.ModelMultipleChoiceField(
        queryset=MedicalGroup.objects.all(),
        required=False,
        widget=FilteredSelectMultiple("medical groups", is_stacked=False),
        help_text="The medical groups whose review items this clinician decides.",
    )

    class Meta:
        model = Clinician
        fields = ["user"]


@admin.register(Clinician)
class ClinicianAdmin(admin.ModelAdmin):
    form = ClinicianForm
    list_display = ["user", "covers_shown"]
    search_fields = ["user__username"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    has_change_permission = has_add_permission = has_delete_permission = has_view_permission

    @admin.display(description="covers")
    def covers_shown(self, obj: Clinician) -> str:
        return ", ".join(g.name for g in covered_groups(obj.user))

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        form = super().get_form(request, obj, change, **kwargs)
        if obj is not None:
            form.base_fields["covers"].initial = list(covered_groups(obj.user))
        return form

    def save_model(self, request: HttpRequest, obj: Clinician, form: Any, change: bool) -> None:
        clinician_groups_set(user=obj.user, groups=form.cleaned_data["covers"])


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(ReadOnlyAdmin):
    """Every decision: who, when, what, under which rule-set version. Read-only."""

    list_display = ["created_at", "clinician", "group", "verdict", "reason", "ruleset_version"]
    list_filter = ["verdict", "reason"]
    list_select_related = ["clinician", "group"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        items = scoped(request.user).values("pk")
        return super().get_queryset(request).filter(request__in=items)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_clinician(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not is_clinician(request.user):
            return False
        return obj is None or self.get_queryset(request).filter(pk=obj.pk).exists()


# Rule sets and rules (safety leads) ---------------------------------------------------------


def _is_safety_lead(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.groups.filter(name=SAFETY_LEAD).exists())


class SafetyLeadOnly:
    """Rule governance is for safety leads; reviewing clinicians do not edit rules."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_safety_lead(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_safety_lead(request)


class RuleInline(admin.TabularInline):
    model = Rule
    # Tuples: the stubs type `fields` and `readonly_fields` differently, and only a tuple (not
    # a list, which is invariant) fits both.
    readonly_fields = ("code", "action", "severity", "verified", "effective_from", "effective_to")
    fields = readonly_fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RuleSet)
class RuleSetAdmin(SafetyLeadOnly, ReadOnlyAdmin):
    list_display = [
        "version",
        "status",
        "created_by",
        "proposed_by",
        "activated_by",
        "activated_at",
    ]
    list_filter = ["status"]
    readonly_fields = (
        "version",
        "status",
        "note",
        "source_file_sha256",
        "created_by",
        "proposed_by",
        "proposed_at",
        "activated_by",
        "activated_at",
        "dry_run_shown",
    )
    fields = readonly_fields
    inlines = [RuleInline]
    actions = ["draft_from_active", "propose", "activate", "discard"]

    @admin.display(description="dry run")
    def dry_run_shown(self, obj: RuleSet) -> str:
        if not obj.dry_run:
            return "-"
        d = obj.dry_run
        return (
            f"Of {d['open_nudges']} nudges not yet acted on: {d['would_block']} would be blocked "
            f"({d['patients_blocked']} patients), {d['would_review']} sent to review "
            f"({d['patients_reviewed']} patients), {d['would_free']} freed. "
            f"By rule: {d['by_rule']}."
        )

    def _run(self, request: HttpRequest, what: str, call: Any) -> None:
        try:
            result = call()
        except ApplicationError as error:
            self.message_user(request, error.message, messages.ERROR)
            return
        self.message_user(request, f"{what}: {result}")

    @admin.action(description="Create a draft from the active rule set")
    def draft_from_active(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._run(request, "Draft created", lambda: ruleset_draft_create(by=_signed_in(request)))

    @admin.action(description="Propose the selected draft for activation (runs the dry run)")
    def propose(self, request: HttpRequest, queryset: QuerySet) -> None:
        for rule_set in queryset:
            self._run(
                request,
                f"Proposed v{rule_set.version}",
                lambda rs=rule_set: ruleset_submit(rule_set=rs, by=_signed_in(request)).dry_run,
            )

    @admin.action(description="Sign off and activate the selected proposed set (second person)")
    def activate(self, request: HttpRequest, queryset: QuerySet) -> None:
        for rule_set in queryset:
            self._run(
                request,
                f"Activated v{rule_set.version}",
                lambda rs=rule_set: ruleset_activate(rule_set=rs, by=_signed_in(request)),
            )

    @admin.action(description="Discard the selected draft or proposed set")
    def discard(self, request: HttpRequest, queryset: QuerySet) -> None:
        for rule_set in queryset:
            self._run(
                request,
                f"Discarded v{rule_set.version}",
                lambda rs=rule_set: ruleset_discard(rule_set=rs, by=_signed_in(request)),
            )


class RuleForm(forms.ModelForm):
    tags_text = forms.CharField(
        label="tags", required=False, help_text="Comma-separated; a template matches any of them."
    )
    categories = forms.MultipleChoiceField(choices=[(c, c) for c in CATEGORIES], required=False)
    goals = forms.MultipleChoiceField(choices=[(g, g) for g in GOALS], required=False)
    intensities = forms.MultipleChoiceField(choices=[(i, i) for i in INTENSITIES], required=False)

    class Meta:
        model = Rule
        fields = [
            "rule_set",
            "code",
            "groups",
            "tags_text",
            "categories",
            "goals",
            "intensities",
            "action",
            "severity",
            "rationale",
            "note_to_patient",
            "source_title",
            "source_publisher",
            "source_url",
            "source_summary",
            "verified",
            "effective_from",
            "effective_to",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rule_set_field = cast(forms.ModelChoiceField, self.fields["rule_set"])  # a ForeignKey
        rule_set_field.queryset = RuleSet.objects.filter(status=RuleSetStatus.DRAFT)
        if self.instance.pk:
            self.fields["tags_text"].initial = ", ".join(self.instance.tags)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what ModelForm.clean returns (the stubs allow None)
        data["tags"] = sorted(
            {t.strip() for t in data.get("tags_text", "").split(",") if t.strip()}
        )
        errors = validate_rule(
            groups=[g.slug for g in data.get("groups") or []],
            known_groups=MedicalGroup.objects.values_list("slug", flat=True),
            tags=data["tags"],
            categories=data.get("categories", []),
            goals=data.get("goals", []),
            intensities=data.get("intensities", []),
            action=data.get("action", ""),
            severity=data.get("severity", ""),
            note_to_patient=data.get("note_to_patient", ""),
            effective_from=data.get("effective_from"),
            effective_to=data.get("effective_to"),
            verified=bool(data.get("verified")),
            source_url=data.get("source_url", ""),
        )
        for name, message in errors.items():
            self.add_error(
                name if name in self.fields else ("tags_text" if name == "match" else None), message
            )
        return data


@admin.register(Rule)
class RuleAdmin(SafetyLeadOnly, admin.ModelAdmin):
    form = RuleForm
    list_display = ["code", "rule_set", "action", "severity", "verified", "revision"]
    list_filter = ["rule_set", "action", "severity", "verified", "groups"]
    search_fields = ["code"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return (
            _is_safety_lead(request) and RuleSet.objects.filter(status=RuleSetStatus.DRAFT).exists()
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_safety_lead(request) and (
            obj is None or obj.rule_set.status == RuleSetStatus.DRAFT
        )

    has_delete_permission = has_change_permission

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = rule_save(
            rule_set=data["rule_set"],
            code=data["code"],
            groups=[g.slug for g in data["groups"]],
            fields={name: data[name] for name in RULE_FIELDS if name != "tags"}
            | {"tags": data["tags"]},
            by=_signed_in(request),
        )
        obj.pk = saved.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # rule_save set the groups

    def delete_model(self, request: HttpRequest, obj: Rule) -> None:
        rule_delete(rule=obj, by=_signed_in(request))


@admin.register(RuleRevision)
class RuleRevisionAdmin(SafetyLeadOnly, ReadOnlyAdmin):
    """The history of every rule change: who, when, before and after."""

    list_display = ["created_at", "rule_set", "code", "change", "changed_by"]
    list_filter = ["change", "rule_set"]
    search_fields = ["code"]
