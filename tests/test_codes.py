"""Coded records (patients/codes.py): conditions must be ICD-10-CM codes and medications ATC
substance codes, so medical-group membership can follow from them. Invalid codes are refused
at the door (patients_create) and in the reviewed medical-groups file (medical_groups_load)."""

import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import ApplicationError
from patients.codes import is_atc, is_icd10cm
from patients.models import Condition, Medication, Patient
from patients.services import NewPatient, patients_create
from safety.models import MedicalGroup
from safety.selectors import group_slugs_for_patient
from safety.services import GROUPS_FILE, medical_groups_load, patients_groups_refresh

pytestmark = pytest.mark.django_db


# ICD-10-CM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "E11",  # a category
        "E11.9",  # a billable code, with the dot
        "E119",  # ... and without
        "I10",
        "I50.9",
        "F50.00",
        "Z34.90",
        "Z79.4",
        "e11.9",  # case does not matter
        " I10 ",  # nor surrounding space
    ],
)
def test_a_real_icd10cm_code_or_category_is_accepted(code):
    assert is_icd10cm(code)


@pytest.mark.parametrize(
    "code",
    [
        "X99.99",  # the right shape, but no such code
        "E11.999",
        "I10.0",  # I10 has no subcodes
        "E11.",
        "E 11.9",
        "ICD",
        "1234",
        "",
        "   ",
        "E11.9-I10",
        "A10BA02",  # an ATC code is not a condition
    ],
)
def test_something_that_is_not_an_icd10cm_code_is_refused(code):
    assert not is_icd10cm(code)


@pytest.mark.parametrize(
    "code",
    [
        "1",  # chapter 1 (infectious diseases) of the tabular list
        "22",
        "A00-A09",  # a block of categories
        "E08-E13",
    ],
)
def test_a_chapter_or_block_of_the_classification_is_not_a_code(code):
    # is_icd10cm promises "a category or a billable code"; chapters and blocks are neither,
    # and as a group prefix "E08-E13" would silently never match a patient's code.
    assert not is_icd10cm(code)


# ATC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "A",  # level 1: anatomical main group
        "A10",  # level 2
        "A10B",  # level 3
        "A10BA",  # level 4
        "A10BA02",  # level 5: the substance (metformin)
        "a10ba02",
        "N06AB06",
    ],
)
def test_an_atc_code_of_any_level_is_accepted_as_a_class(code):
    assert is_atc(code)


@pytest.mark.parametrize("code", ["A10BA02", "n06ab06", " C09AA05 "])
def test_an_atc_substance_code_is_accepted_as_a_medication(code):
    assert is_atc(code, substance=True)


@pytest.mark.parametrize("code", ["A", "A10", "A10B", "A10BA"])
def test_an_atc_class_above_the_substance_is_not_a_medication(code):
    assert not is_atc(code, substance=True)


@pytest.mark.parametrize(
    "code", ["A1", "A10B1", "A10BA2", "10BA02", "A10BA02X", "AA0BA02", "A10BA0Z", ""]
)
def test_something_that_is_not_an_atc_code_is_refused(code):
    assert not is_atc(code)
    assert not is_atc(code, substance=True)


@pytest.mark.parametrize("code", ["E", "I10", "E11", "Z99ZZ99", "F32AB01"])
def test_an_atc_code_starts_with_one_of_the_fourteen_anatomical_main_groups(code):
    # ATC's first level is one of A B C D G H J L M N P R S V. Without that check an ICD-10
    # category typed into a group's ATC prefixes ("I10", "E11") is accepted and never matches.
    assert not is_atc(code)
    assert not is_atc(code, substance=True)


# patients_create ---------------------------------------------------------------------------


def new_patient(pseudonym: str, **codes) -> NewPatient:
    return NewPatient(
        pseudonym=pseudonym, age_band="45-59", sex="female", goals={"activity": 0.8}, **codes
    )


@pytest.mark.parametrize(
    ("codes", "field", "named"),
    [
        ({"conditions": ["I10", "X99.99"]}, "conditions", "X99.99"),
        ({"conditions": ["not-a-code"]}, "conditions", "not-a-code"),
        ({"medications": ["A10BA02", "A10B"]}, "medications", "A10B"),  # a class, not a substance
        ({"medications": ["A10BA2"]}, "medications", "A10BA2"),
    ],
)
def test_a_record_with_an_invalid_code_is_refused_naming_the_field_and_no_patient_is_written(
    codes, field, named
):
    before = Patient.objects.count()

    with pytest.raises(ApplicationError) as refused:
        patients_create(records=[new_patient("codes-ok-1"), new_patient("codes-bad-1", **codes)])

    assert refused.value.status == 400
    assert set(refused.value.fields) == {field}
    assert named in refused.value.fields[field]
    assert Patient.objects.count() == before  # not even the valid record before it
    assert not Patient.objects.filter(pseudonym__in=["codes-ok-1", "codes-bad-1"]).exists()


def test_a_record_with_invalid_conditions_and_medications_names_both_fields():
    with pytest.raises(ApplicationError) as refused:
        patients_create(
            records=[new_patient("codes-bad-2", conditions=["X99.99"], medications=["A10"])]
        )

    assert set(refused.value.fields) == {"conditions", "medications"}


def test_a_valid_code_that_no_group_uses_puts_the_patient_in_no_group():
    # J45.909: asthma, which none of the demo groups covers.
    [(patient, _)] = patients_create(
        records=[new_patient("codes-asthma", conditions=["J45.909"], medications=["R03AC02"])]
    )

    groups = patients_groups_refresh(patient_ids=[patient.pk])

    assert groups[patient.pk] == set()
    assert group_slugs_for_patient(patient) == frozenset()
    assert list(Condition.objects.filter(patient=patient).values_list("code", flat=True)) == [
        "J45.909"
    ]


def test_codes_are_stored_upper_case_and_trimmed_and_still_place_the_patient_in_groups():
    [(patient, _)] = patients_create(
        records=[
            new_patient("codes-lower", conditions=[" i50.9 ", "I50.9"], medications=["a10ba02"])
        ]
    )

    patients_groups_refresh(patient_ids=[patient.pk])

    assert list(Condition.objects.filter(patient=patient).values_list("code", flat=True)) == [
        "I50.9"
    ]
    assert list(Medication.objects.filter(patient=patient).values_list("code", flat=True)) == [
        "A10BA02"
    ]
    assert group_slugs_for_patient(patient) == frozenset({"heart-failure", "type-2-diabetes"})


# medical_groups_load -----------------------------------------------------------------------


def groups_file(tmp_path: Path, definitions: list[dict[str, Any]]) -> Path:
    path = tmp_path / "medical_groups.json"
    path.write_text(json.dumps(definitions))
    return path


@pytest.mark.parametrize(
    ("icd10", "atc"),
    [
        (["X99.99"], []),
        (["I50", "not-a-code"], []),
        ([], ["A10B1"]),
        ([], ["10BA"]),
        (["E08-E13"], []),  # a block range: as a prefix it would never match a code
        ([], ["I10"]),  # an ICD-10 category in the ATC list
    ],
    ids=["no-such-icd", "junk-icd", "bad-atc-level", "atc-no-letter", "icd-block", "icd-as-atc"],
)
def test_a_groups_file_with_an_invalid_prefix_is_refused_and_nothing_is_written(
    tmp_path, icd10, atc
):
    definitions = [
        {"slug": "new-valid-group", "name": "Valid", "icd10_prefixes": ["J45"], "atc_prefixes": []},
        {"slug": "new-bad-group", "name": "Bad", "icd10_prefixes": icd10, "atc_prefixes": atc},
    ]
    before = list(MedicalGroup.objects.values_list("slug", "icd10_prefixes", "atc_prefixes"))

    with pytest.raises(ApplicationError) as refused:
        medical_groups_load(path=groups_file(tmp_path, definitions))

    assert "prefixes" in refused.value.fields
    assert "new-bad-group" in refused.value.message
    after = list(MedicalGroup.objects.values_list("slug", "icd10_prefixes", "atc_prefixes"))
    assert after == before


def test_the_shipped_groups_file_loads_and_every_prefix_is_a_valid_code():
    definitions = json.loads(GROUPS_FILE.read_text())

    loaded = medical_groups_load()

    assert loaded == len(definitions)
    for group in definitions:
        assert all(is_icd10cm(p) for p in group["icd10_prefixes"]), group["slug"]
        assert all(is_atc(p) for p in group["atc_prefixes"]), group["slug"]
