"""API token authentication that reads the token, its user and the user's patient record (if
any) in one hand-written query (core.raw): every patient API request needs the patient, and
the permission check and the views read it from the user (request.user.patient)."""

import functools
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from core import raw
from patients.models import Patient


@functools.cache
def _query(token_model: Any, user_model: Any, vendor: str) -> str:
    """Token, user and patient columns, in that order. Names come from the models' metadata;
    the key is a bound parameter."""
    return (
        f"SELECT {raw.columns(token_model, 't')}, {raw.columns(user_model, 'u')}, "  # noqa: S608
        f"{raw.columns(Patient, 'p')} FROM {raw.table(token_model)} t "
        f"JOIN {raw.table(user_model)} u ON u.id = t.user_id "
        f"LEFT JOIN {raw.table(Patient)} p ON p.user_id = u.id WHERE t.key = %s"
    )


class TokenWithPatientAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        token_model: Any = self.get_model()
        user_model: Any = get_user_model()
        fields = [f for model in (token_model, user_model, Patient) for f in raw.fields_of(model)]
        with connection.cursor() as cursor:
            cursor.execute(_query(token_model, user_model, connection.vendor), [key])
            rows = cursor.fetchall()
        if not rows:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        [values] = raw.convert(rows, fields)
        n_token, n_user = len(raw.fields_of(token_model)), len(raw.fields_of(user_model))
        token = raw.instance(token_model, values[:n_token])
        user: Any = raw.instance(user_model, values[n_token : n_token + n_user])
        patient_values = values[n_token + n_user :]
        patient = None if patient_values[0] is None else raw.instance(Patient, patient_values)
        token_model.user.field.set_cached_value(token, user)
        Patient.user.field.remote_field.set_cached_value(user, patient)  # user.patient
        if patient is not None:
            Patient.user.field.set_cached_value(patient, user)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, token)
