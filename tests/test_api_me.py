"""GET and PATCH /api/v1/me/: what the patient sees about themselves and may change."""

import datetime as dt

import pytest
from django.utils import timezone

from patients.models import Patient
from tests.factories import make_patient

pytestmark = pytest.mark.django_db

URL = "/api/v1/me/"


def stored(patient: Patient) -> tuple:
    """The patient's row as stored, to check that a refused change wrote nothing."""
    row = Patient.objects.get(pk=patient.pk)
    return (
        row.pseudonym,
        row.age_band,
        row.sex,
        row.timezone,
        row.quiet_start,
        row.quiet_end,
        row.snoozed_until,
        row.updated_at,
        sorted(row.goals.values_list("goal", "weight")),
    )


def test_me_shows_the_pseudonym_groups_goals_and_preferences(patient_a, api_a):
    patient = patient_a[0]

    response = api_a.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["pseudonym"] == patient.pseudonym
    assert body["medical_groups"] == [{"slug": "hypertension", "name": "Hypertension"}]
    assert body["goals"] == [
        {"goal": "activity", "weight": 0.8},
        {"goal": "sleep", "weight": 0.4},
    ]
    assert body["timezone"] == "UTC"
    assert body["quiet_start"] == "00:00:00"
    assert body["quiet_end"] == "00:00:00"
    assert body["snoozed_until"] is None


def test_medical_groups_follow_from_the_coded_conditions(api_a):
    _, token = make_patient(groups=("type-2-diabetes", "heart-failure"))
    api_a.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    body = api_a.get(URL).json()

    assert [group["slug"] for group in body["medical_groups"]] == [
        "heart-failure",
        "type-2-diabetes",
    ]


def test_a_patient_without_coded_conditions_is_in_no_group(api_a):
    _, token = make_patient(groups=())
    api_a.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert api_a.get(URL).json()["medical_groups"] == []


def test_each_patient_sees_only_themselves(patient_a, patient_b, api_b):
    body = api_b.get(URL).json()

    assert body["pseudonym"] == patient_b[0].pseudonym
    assert [group["slug"] for group in body["medical_groups"]] == ["depression"]
    assert {goal["goal"] for goal in body["goals"]} == {"mood", "diet"}


def test_changing_the_time_zone_is_stored_and_shown(patient_a, api_a):
    response = api_a.patch(URL, {"timezone": "Europe/Lisbon"}, format="json")

    assert response.status_code == 200
    assert response.json()["timezone"] == "Europe/Lisbon"
    assert Patient.objects.get(pk=patient_a[0].pk).timezone == "Europe/Lisbon"


def test_changing_quiet_hours_is_stored_and_shown(patient_a, api_a):
    response = api_a.patch(URL, {"quiet_start": "22:30", "quiet_end": "06:45"}, format="json")

    assert response.status_code == 200
    assert (response.json()["quiet_start"], response.json()["quiet_end"]) == (
        "22:30:00",
        "06:45:00",
    )
    row = Patient.objects.get(pk=patient_a[0].pk)
    assert (row.quiet_start, row.quiet_end) == (dt.time(22, 30), dt.time(6, 45))


def test_a_partial_change_leaves_the_other_preferences_alone(patient_a, api_a):
    api_a.patch(URL, {"timezone": "Asia/Tokyo"}, format="json")

    api_a.patch(URL, {"quiet_start": "21:00"}, format="json")

    row = Patient.objects.get(pk=patient_a[0].pk)
    assert (row.timezone, row.quiet_start, row.quiet_end) == (
        "Asia/Tokyo",
        dt.time(21, 0),
        dt.time(0, 0),
    )


def test_snoozing_is_set_and_null_clears_it(patient_a, api_a):
    until = (timezone.now() + dt.timedelta(days=1)).replace(microsecond=0)

    set_response = api_a.patch(URL, {"snoozed_until": until.isoformat()}, format="json")

    assert set_response.status_code == 200
    assert Patient.objects.get(pk=patient_a[0].pk).snoozed_until == until

    clear_response = api_a.patch(URL, {"snoozed_until": None}, format="json")

    assert clear_response.status_code == 200
    assert clear_response.json()["snoozed_until"] is None
    assert Patient.objects.get(pk=patient_a[0].pk).snoozed_until is None


@pytest.mark.parametrize(
    "body",
    [
        {"pseudonym": "someone-else"},
        {"age_band": "18-29"},
        {"sex": "male"},
        {"goals": [{"goal": "diet", "weight": 1.0}]},
        {"medical_groups": []},
        {"is_active": False},
        {"favourite_colour": "blue"},
    ],
    ids=lambda body: next(iter(body)),
)
def test_a_field_that_cannot_be_changed_is_refused_by_name_and_nothing_is_written(
    patient_a, api_a, body
):
    before = stored(patient_a[0])

    response = api_a.patch(URL, body, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(body)
    assert stored(patient_a[0]) == before


def test_a_refused_field_beside_an_allowed_one_writes_nothing_at_all(patient_a, api_a):
    before = stored(patient_a[0])

    response = api_a.patch(URL, {"timezone": "Europe/Paris", "age_band": "75+"}, format="json")

    assert response.status_code == 400
    assert "age_band" in response.json()["error"]["fields"]
    assert stored(patient_a[0]) == before


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "utc+2", "", "Europe/"])
def test_an_unknown_time_zone_is_refused_and_nothing_is_written(patient_a, api_a, zone):
    before = stored(patient_a[0])

    response = api_a.patch(URL, {"timezone": zone}, format="json")

    assert response.status_code == 400
    assert "timezone" in response.json()["error"]["fields"]
    assert stored(patient_a[0]) == before


@pytest.mark.parametrize(
    "body",
    [{"quiet_start": "25:00"}, {"quiet_end": "late"}, {"snoozed_until": "soon"}],
    ids=lambda body: next(iter(body)),
)
def test_a_malformed_preference_is_refused_by_name(patient_a, api_a, body):
    before = stored(patient_a[0])

    response = api_a.patch(URL, body, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(body)
    assert stored(patient_a[0]) == before


def test_an_empty_change_is_refused(patient_a, api_a):
    before = stored(patient_a[0])

    response = api_a.patch(URL, {}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert stored(patient_a[0]) == before


def test_a_body_that_is_not_an_object_is_refused(patient_a, api_a):
    before = stored(patient_a[0])

    response = api_a.patch(URL, ["timezone", "Europe/Paris"], format="json")

    assert response.status_code == 400
    assert stored(patient_a[0]) == before


def send(client, method: str):
    if method == "get":
        return client.get(URL)
    return client.patch(URL, {"timezone": "Europe/Paris"}, format="json")


@pytest.mark.parametrize("method", ["get", "patch"])
def test_without_a_token_me_answers_401(anonymous, method):
    response = send(anonymous, method)

    assert response.status_code == 401


@pytest.mark.parametrize("method", ["get", "patch"])
def test_a_token_that_is_not_a_patients_is_refused_403(outsider_api, method):
    response = send(outsider_api, method)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
