"""POST /api/v1/enrollments/ (privacy/enrolment_api.py, patients/enrolment.py): the clinic's
integration enrols a patient; identifiers become a keyed pseudonym and an encrypted vault
entry; re-enrolling the same person finds the same patient; bad input is refused naming the
field, with nothing stored."""

import copy
import hashlib
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import override_settings
from rest_framework.test import APIClient

from clinicians.roles import INTEGRATION
from patients.identifiers import NAMESPACE, identifiers_parse, patient_pseudonym
from patients.models import Condition, IdentityVault, Patient, PatientKey
from privacy.pseudonyms import pseudonym
from tests.factories import UserFactory, token_for

URL = "/api/v1/enrollments/"

RECORD: dict[str, Any] = {
    "identifiers": {
        "record_number": "MRN-0042-77",
        "email": "Ada.Lovelace@Example.ORG",
        "phone": "+44 20 7946 0018",
    },
    "date_of_birth": "1961-03-14",
    "sex": "female",
    "timezone": "Europe/London",
    "conditions": ["I10", "E11.9"],
    "medications": ["C09AA05"],
    "goals": {"activity": 0.8, "medication": 0.6},
    "notes": "Prefers morning reminders.",
}


@pytest.fixture
def integration(db) -> APIClient:
    user = UserFactory.create(username="clinic-integration", is_staff=False)
    user.groups.add(Group.objects.get(name=INTEGRATION))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def enrol(client: APIClient, **changes):
    body = copy.deepcopy(RECORD)
    for key, value in changes.items():
        if key in ("record_number", "email", "phone"):
            body["identifiers"][key] = value
        elif value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return client.post(URL, body, format="json")


def stored() -> tuple[int, int, int, int]:
    return (
        Patient.objects.count(),
        get_user_model().objects.count(),
        IdentityVault.objects.count(),
        PatientKey.objects.count(),
    )


def test_enrolment_returns_a_keyed_pseudonym_and_a_working_app_token(integration):
    response = enrol(integration)

    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True
    assert body["pseudonym"].startswith("p1_") and len(body["pseudonym"]) == 35
    app = APIClient()
    app.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    me = app.get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json()["pseudonym"] == body["pseudonym"]
    assert me.json()["age_band"] == "60-74"
    assert {g["slug"] for g in me.json()["medical_groups"]} == {
        "hypertension",
        "type-2-diabetes",
    }


def test_re_enrolling_the_same_person_finds_the_same_patient(integration):
    first = enrol(integration).json()
    before = stored()

    # the same record number, written differently, with other contact details
    again = enrol(integration, record_number="  mrn-0042-77 ", email="ada@example.net")

    assert again.status_code == 200
    assert again.json() == {**first, "created": False}
    assert stored() == before


def test_two_people_get_different_pseudonyms(integration):
    first = enrol(integration).json()
    second = enrol(integration, record_number="MRN-0042-78").json()

    assert first["pseudonym"] != second["pseudonym"]
    assert first["token"] != second["token"]


def test_the_pseudonym_is_a_keyed_hmac_not_a_plain_hash(integration):
    body = enrol(integration).json()
    record_number = RECORD["identifiers"]["record_number"]
    normalised = record_number.strip().casefold()

    plain = {
        hashlib.new(name, value.encode()).hexdigest()[:32]
        for name in ("sha256", "sha1", "md5")
        for value in (record_number, normalised, f"{NAMESPACE}:{normalised}")
    }
    assert body["pseudonym"].removeprefix("p1_") not in plain
    with override_settings(PSEUDONYM_KEYS={"1": "another secret"}):
        assert pseudonym(record_number, namespace=NAMESPACE) != body["pseudonym"]


def test_a_person_enrolled_under_an_older_pseudonym_key_is_still_found(integration):
    body = enrol(integration).json()
    from django.conf import settings

    keys = {**settings.PSEUDONYM_KEYS, "2": "the new pseudonym key"}
    with override_settings(PSEUDONYM_KEYS=keys, PSEUDONYM_KEY_VERSION="2"):
        again = enrol(integration)
        new_person = enrol(integration, record_number="MRN-NEW-1")

    assert again.status_code == 200
    assert again.json()["pseudonym"] == body["pseudonym"]
    assert new_person.status_code == 201
    assert new_person.json()["pseudonym"].startswith("p2_")


def test_identifiers_are_stored_only_encrypted_in_the_vault(integration):
    body = enrol(integration).json()
    patient = Patient.objects.get(pseudonym=body["pseudonym"])
    vault = IdentityVault.objects.get(patient=patient)

    for value in ("MRN-0042-77", "Ada.Lovelace", "example.org", "7946"):
        assert value.lower() not in vault.sealed.lower()
        assert value.lower() not in (patient.contact_sealed + patient.date_of_birth_sealed).lower()
    assert vault.sealed.startswith("g1$")


def test_the_age_band_follows_from_the_date_of_birth_and_both_must_agree(integration):
    assert enrol(integration, date_of_birth="1999-01-01").json()["pseudonym"]
    response = enrol(integration, record_number="MRN-9", date_of_birth="1999-01-01", age_band="75+")

    assert response.status_code == 400
    assert "age_band" in response.json()["error"]["fields"]


def test_an_age_band_alone_is_accepted_without_a_date_of_birth(integration):
    response = enrol(integration, date_of_birth=None, age_band="30-44")

    assert response.status_code == 201
    assert Patient.objects.get(pseudonym=response.json()["pseudonym"]).age_band == "30-44"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "ada@"}, "email"),
        ({"phone": "12"}, "phone"),
        ({"phone": "+44 20 79x6 0018"}, "phone"),
        ({"record_number": ""}, "record_number"),
        ({"record_number": "   "}, "record_number"),
        ({"record_number": "x" * 65}, "record_number"),
        ({"record_number": "MRN\x00"}, "record_number"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_malformed_identifier_is_refused_naming_it_and_nothing_is_stored(
    integration, changes, field
):
    before = stored()

    response = enrol(integration, **changes)

    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"]["identifiers"]
    assert stored() == before
    # the refused value is not echoed back
    value = next(iter(changes.values())).strip()
    if len(value) > 3:
        assert value not in response.content.decode()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"conditions": ["I10", "XYZ.99"]}, "conditions"),
        ({"medications": ["C09"]}, "medications"),
        ({"goals": {"flying": 0.5}}, "goals"),
        ({"goals": {}}, "goals"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"sex": "robot"}, "sex"),
        ({"date_of_birth": "2020-01-01"}, "date_of_birth"),
        ({"date_of_birth": "14/03/1961"}, "date_of_birth"),
        ({"consents": {"marketing": True}}, "consents"),
        ({"favourite_colour": "blue"}, "favourite_colour"),
        ({"identifiers": None}, "identifiers"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_invalid_record_is_refused_naming_the_field_and_nothing_is_stored(
    integration, changes, field
):
    before = (stored(), Condition.objects.count())

    response = enrol(integration, **changes)

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert (stored(), Condition.objects.count()) == before


def test_an_invalid_record_for_an_already_enrolled_person_is_still_refused(integration):
    enrol(integration)

    response = enrol(integration, conditions=["NOPE"])

    assert response.status_code == 400
    assert "conditions" in response.json()["error"]["fields"]


def test_only_the_integration_may_enrol(api_a, outsider_api, anonymous, clinician_cardio):
    clinician = APIClient()
    clinician.credentials(HTTP_AUTHORIZATION=f"Token {token_for(clinician_cardio)}")
    before = stored()

    assert enrol(api_a).status_code == 403
    assert enrol(outsider_api).status_code == 403
    assert enrol(clinician).status_code == 403
    assert enrol(anonymous).status_code == 401
    assert stored() == before


def test_the_integration_token_is_not_a_patient_token(integration):
    assert integration.get("/api/v1/me/").status_code == 403
    assert integration.get("/api/v1/me/export/").status_code == 403


def test_identifier_parsing_normalises_what_identifies_the_same_person():
    parsed, errors = identifiers_parse(
        {"record_number": " ＭＲＮ-1 ", "email": "Ann@EXAMPLE.org", "phone": "(020) 7946-0018"}
    )

    assert errors == {}
    assert parsed is not None
    assert parsed.record_number == "MRN-1"  # NFKC folds the full-width letters
    assert parsed.email == "Ann@example.org"
    assert parsed.phone == "02079460018"
    same, _ = identifiers_parse({"record_number": "mrn-1"})
    assert same is not None
    assert patient_pseudonym(parsed) == patient_pseudonym(same)


def test_a_batch_is_all_or_nothing_and_names_the_refused_record(db):
    from core.errors import ApplicationError
    from patients.enrolment import Enrolment
    from privacy.enrolment import enrolments_create

    good = Enrolment(identifiers={"record_number": "B-1"}, age_band="30-44", goals={"mood": 1})
    bad = Enrolment(identifiers={"record_number": "B-2", "phone": "1"}, age_band="30-44", goals={})
    before = stored()

    with pytest.raises(ApplicationError) as refused:
        enrolments_create(records=[good, bad])

    assert refused.value.fields["record"] == 1
    assert "identifiers" in refused.value.fields
    assert stored() == before


def test_the_same_person_twice_in_one_batch_is_created_once(db):
    from patients.enrolment import Enrolment
    from privacy.enrolment import enrolments_create

    record = Enrolment(identifiers={"record_number": "B-1"}, age_band="30-44", goals={"mood": 1})
    again = Enrolment(identifiers={"record_number": " b-1"}, age_band="30-44", goals={"mood": 1})

    first, second = enrolments_create(records=[record, again])

    assert (first.created, second.created) == (True, False)
    assert first.patient.pk == second.patient.pk and first.token == second.token
    assert Patient.objects.filter(pseudonym=first.patient.pseudonym).count() == 1
