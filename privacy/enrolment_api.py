"""POST /api/v1/enrollments/: the clinic's integration enrols a patient. Only a token of a
user with patients.enrol_patient (the "integration" role) may call it. The body carries
identifiers, so this view never stores it (no idempotency record: the request is idempotent
by itself) and its errors name fields, never values."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError
from patients.enrolment import Enrolment
from privacy.enrolment import enrolments_create

MAX_CODES = 100


class IsIntegration(BasePermission):
    message = "This endpoint is for the clinic's integration."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("patients.enrol_patient"))


class EnrolmentSerializer(serializers.Serializer):
    """Shapes only; the service checks identifiers, codes, goals and the time zone."""

    identifiers = serializers.DictField(
        help_text="record_number (required), email and phone (optional)."
    )
    date_of_birth = serializers.DateField(required=False, allow_null=True, default=None)
    age_band = serializers.CharField(required=False, allow_null=True, default=None)
    sex = serializers.CharField(required=False, default="unknown", max_length=8)
    timezone = serializers.CharField(required=False, default="UTC", max_length=64)
    conditions = serializers.ListField(
        child=serializers.CharField(max_length=16),
        required=False,
        default=list,
        max_length=MAX_CODES,
    )
    medications = serializers.ListField(
        child=serializers.CharField(max_length=16),
        required=False,
        default=list,
        max_length=MAX_CODES,
    )
    goals = serializers.DictField(child=serializers.FloatField())
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    consents = serializers.DictField(child=serializers.BooleanField(), required=False, default=dict)

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name[:40]: "Unknown field." for name in sorted(unknown)}
            )
        return attrs


class EnrolledSerializer(serializers.Serializer):
    pseudonym = serializers.CharField()
    token = serializers.CharField(help_text="The patient's app token.")
    created = serializers.BooleanField()


class EnrolmentView(APIView):
    permission_classes = [IsIntegration]

    @extend_schema(
        request=EnrolmentSerializer,
        responses={201: EnrolledSerializer, 200: EnrolledSerializer},
        summary="Enrol a patient (the clinic's integration)",
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApplicationError("The request body must be a JSON object.")
        serializer = EnrolmentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        [enrolled] = enrolments_create(records=[Enrolment(**serializer.validated_data)])
        return Response(
            {
                "pseudonym": enrolled.patient.pseudonym,
                "token": enrolled.token,
                "created": enrolled.created,
            },
            status=status.HTTP_201_CREATED if enrolled.created else status.HTTP_200_OK,
        )
