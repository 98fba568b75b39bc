"""The reports API for compliance officers, /api/v1/reports/: the catalogue, the dry run,
releases, one release, its signed exports, and a period's ledger. Anyone else gets 404 from
every endpoint (an anonymous request 401). Views parse, call one service or selector, and
shape the output."""

from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError, not_found
from nudges.idempotency import idempotent
from privacy.access import is_compliance_officer, releases_for_officer
from privacy.dp.periods import PeriodError, period_parse
from privacy.ledger import budget_balance
from privacy.models import Channel, Release
from privacy.reports import catalogue, release_export, report_preview, report_release

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Repeat a release safely: the first response is replayed, nothing is spent.",
)
FIELDS = {"report", "period", "budget"}


class IsComplianceOfficer(BasePermission):
    """404 rather than 403: to anyone but a compliance officer the reports do not exist."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not is_compliance_officer(request.user):
            raise Http404
        return True


class ReportRequestSerializer(serializers.Serializer):
    """Types only; the service checks the values and names what is wrong."""

    report = serializers.CharField(max_length=40)
    period = serializers.CharField(max_length=16)
    budget = serializers.CharField(max_length=32)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError("The request body must be a JSON object.")
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise serializers.ValidationError({name: "Unknown field." for name in unknown})
        if isinstance(data.get("budget"), int | float) and not isinstance(data["budget"], bool):
            data = {**data, "budget": repr(data["budget"])}
        return super().to_internal_value(data)


class ReleaseSerializer(serializers.ModelSerializer):
    released_by = serializers.CharField(source="released_by.username", default=None)
    charged_rho = serializers.FloatField(source="charged")

    class Meta:
        model = Release
        fields = [
            "id",
            "report",
            "period",
            "created_at",
            "released_by",
            "channel",
            "charged_rho",
            "parameters",
            "results",
            "results_sha256",
            "code_version",
        ]


def _parsed(request: Request) -> dict[str, Any]:
    serializer = ReportRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ReportsView(APIView):
    permission_classes = [IsAuthenticated, IsComplianceOfficer]


class CatalogueView(ReportsView):
    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The report catalogue")
    def get(self, request: Request) -> Response:
        return Response({"reports": catalogue()})


class DryRunView(ReportsView):
    @extend_schema(
        request=ReportRequestSerializer,
        responses=OpenApiTypes.OBJECT,
        summary="Dry run: privacy loss and intervals of a release, spending nothing",
    )
    def post(self, request: Request) -> Response:
        return Response(report_preview(**_parsed(request)))


class ReleaseListView(ReportsView):
    @extend_schema(responses=ReleaseSerializer(many=True), summary="Released reports")
    def get(self, request: Request) -> Response:
        releases = releases_for_officer(request.user).defer("results")[:200]
        return Response(
            [
                {
                    "id": r.pk,
                    "report": r.report,
                    "period": r.period,
                    "created_at": r.created_at,
                    "charged_rho": r.charged,
                }
                for r in releases
            ]
        )

    @extend_schema(
        request=ReportRequestSerializer,
        responses={201: ReleaseSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        summary="Release a report: debit the period's budget, then compute and store it",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        release = report_release(**_parsed(request), by=request.user, channel=Channel.API)
        return Response(ReleaseSerializer(release).data, status=status.HTTP_201_CREATED)


def _release(request: Request, release_id: Any) -> Release:
    release = releases_for_officer(request.user).filter(pk=release_id).first()
    if release is None:
        raise not_found("release")
    return release


class ReleaseDetailView(ReportsView):
    @extend_schema(responses=ReleaseSerializer, summary="One released report")
    def get(self, request: Request, release_id: Any) -> Response:
        return Response(ReleaseSerializer(_release(request, release_id)).data)


class ExportView(ReportsView):
    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
        summary="A signed export (csv, json or html) of a released report",
    )
    def get(self, request: Request, release_id: Any, fmt: str) -> HttpResponse:
        export = release_export(release=_release(request, release_id), fmt=fmt)
        response = HttpResponse(export.content, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response


class BudgetView(ReportsView):
    @extend_schema(
        responses=OpenApiTypes.OBJECT, summary="A period's privacy budget: cap, spent, remaining"
    )
    def get(self, request: Request, period: str) -> Response:
        try:
            parsed = period_parse(
                period, today=timezone.now().date(), first=settings.PRIVACY_FIRST_PERIOD
            )
        except PeriodError as error:
            raise ApplicationError(str(error), fields={"period": str(error)}) from None
        return Response(budget_balance(period=parsed).as_dict())
