"""The patient API, /api/v1/. Views parse, call one service or selector, and shape output."""

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError
from nudges import serializers as s
from nudges.idempotency import idempotent
from nudges.permissions import IsPatient
from nudges.responses import decision_body, nudge_body
from nudges.selectors import current_nudges
from nudges.services.decisions import DecisionAsk
from nudges.services.deliveries import deliveries_mark_delivered, delivery_feedback
from nudges.services.events import events_record
from nudges.services.live import decide_live
from patients.models import Patient
from patients.services import patient_update_preferences

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Repeat a write safely: the first response is replayed for the same key.",
)


def _parse(serializer_class: type, request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise ApplicationError("The request body must be a JSON object.", code="invalid")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class PatientView(APIView):
    permission_classes = [IsPatient]

    @property
    def patient(self) -> Patient:
        user = self.request.user
        assert isinstance(user, User)  # IsPatient admits patients' app tokens only
        return user.patient


def inbox_body(patient: Patient) -> list[dict[str, Any]]:
    """The patient's current nudges; those ready are delivered now (this is the inbox)."""
    nudges = list(current_nudges(patient, now=timezone.now()))
    shown = deliveries_mark_delivered(deliveries=nudges, actor="inbox")
    return [nudge_body(delivery) for delivery in shown]


def decision_answer(patient: Patient, trigger: str, context: dict) -> tuple[dict[str, Any], int]:
    """A decision for the patient now (the first one, when this minute has one already): its
    body and status, 201 when made now."""
    decision, created = decide_live(DecisionAsk(patient=patient, trigger=trigger, context=context))
    return decision_body(decision), (status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class NudgeListView(PatientView):
    @extend_schema(responses=s.NudgeSerializer(many=True), summary="The patient's current nudges")
    def get(self, request: Request) -> Response:
        return Response(inbox_body(self.patient))


class DecisionView(PatientView):
    @extend_schema(
        request=s.DecisionRequestSerializer,
        responses={201: s.DecisionSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        summary="Ask for a decision now",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = _parse(s.DecisionRequestSerializer, request)
        body, code = decision_answer(self.patient, data["trigger"], data["context"])
        return Response(body, status=code)


class FeedbackView(PatientView):
    @extend_schema(
        request=s.FeedbackSerializer,
        responses=s.NudgeSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        summary="Feedback on a nudge",
    )
    @idempotent
    def post(self, request: Request, delivery_id: str) -> Response:
        data = _parse(s.FeedbackSerializer, request)
        delivery = delivery_feedback(
            patient=self.patient,
            delivery_id=delivery_id,
            action=data["action"],
            until=data.get("until"),
        )
        return Response(s.NudgeSerializer(delivery).data)


class EventBatchView(PatientView):
    @extend_schema(
        request=s.EventBatchSerializer,
        responses={201: s.EventBatchResultSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        summary="Send a batch of behaviour and health events",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = _parse(s.EventBatchSerializer, request)
        stored, duplicates = events_record(patient=self.patient, events=data["events"])
        return Response({"stored": stored, "duplicates": duplicates}, status=201)


class MeView(PatientView):
    @extend_schema(responses=s.MeSerializer, summary="The patient's profile and preferences")
    def get(self, request: Request) -> Response:
        return Response(s.MeSerializer(self.patient).data)

    @extend_schema(
        request=s.MeUpdateSerializer,
        responses=s.MeSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        summary="Change time zone, quiet hours or snooze",
    )
    @idempotent
    def patch(self, request: Request) -> Response:
        data = _parse(s.MeUpdateSerializer, request)
        with transaction.atomic():
            patient = patient_update_preferences(patient=self.patient, **data)
        return Response(s.MeSerializer(patient).data)
