"""The patient's own data rights in the API: consent per purpose, export and erasure. Views
parse, call one service or selector, and shape the output."""

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError
from patients.models import Patient, Purpose
from patients.rights import patient_erase, patient_export
from patients.selectors import consent_snapshot
from patients.services import consents_set

ConsentSerializer = inline_serializer(
    "Consent",
    {purpose: serializers.BooleanField() for purpose in Purpose.values},
)


class IsPatient(BasePermission):
    """Only a patient's own app token."""

    message = "This API is for patients' app tokens."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "patient"))


class _PatientView(APIView):
    permission_classes = [IsPatient]

    @property
    def patient(self) -> Patient:
        return self.request.user.patient  # type: ignore[union-attr]


class ConsentView(_PatientView):
    @extend_schema(responses=ConsentSerializer, summary="The consent in force per purpose")
    def get(self, request: Request) -> Response:
        return Response(consent_snapshot(self.patient))

    @extend_schema(
        request=ConsentSerializer,
        responses=ConsentSerializer,
        summary="Set consent for every purpose (personalisation, notifications, research)",
    )
    def put(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApplicationError("The request body must be a JSON object.")
        missing = [p for p in Purpose.values if p not in request.data]
        if missing:
            raise ApplicationError(
                "Give consent for every purpose.",
                fields={p: "This field is required." for p in missing},
            )
        return Response(consents_set(patient=self.patient, consents=request.data))


class ExportView(_PatientView):
    @extend_schema(
        responses=inline_serializer("Export", {"format": serializers.CharField()}),
        summary="Everything held about the patient, in JSON",
    )
    def get(self, request: Request) -> Response:
        return Response(patient_export(patient=self.patient, actor=request.user))


# DELETE on the patient's own resource, /api/v1/me/, whose GET and PATCH live in the nudges
# app; config/urls.py combines them with `with_erasure`. (No class docstring: the schema would
# show it as the description of GET and PATCH too.)
class ErasureMixin:
    @extend_schema(responses={204: None}, summary="Erase the patient and all their data")
    def delete(self, request: Request) -> Response:
        """Erasure: the patient, their history and their login are deleted and their data key
        destroyed; only audit entries (no longer readable as theirs) and already released
        aggregate reports remain."""
        patient_erase(patient=request.user.patient, actor=request.user)  # type: ignore[union-attr]
        return Response(status=status.HTTP_204_NO_CONTENT)


def with_erasure(view: type[APIView]) -> Any:
    """`view` (a patient view) that also answers DELETE with erasure."""
    return type(view.__name__, (ErasureMixin, view), {"__module__": view.__module__})
