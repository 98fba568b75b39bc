"""seed_demo (docs/architecture.md, the `demo` app): a synthetic cohort enrolled through the
patient services, staff logins written to a credentials file, and a simulated history of
decisions with full receipts and deliveries."""

import json
import stat

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Count, Q
from rest_framework.test import APIClient

from nudges.models import Decision, Delivery, DeliveryState
from patients.models import Patient

# Real transactions: seeding switches SQLite to bulk-load mode (PRAGMA synchronous=OFF), which
# SQLite refuses inside the transaction that wraps an ordinary test.
pytestmark = pytest.mark.django_db(transaction=True)


def seed(tmp_path, **options):
    path = tmp_path / "c.json"
    arguments = {"patients": 30, "days": 6, "seed": 1, "credentials": path, **options}
    call_command("seed_demo", **arguments)
    return path


@pytest.fixture
def seeded(tmp_path):
    path = seed(tmp_path)
    return json.loads(path.read_text()), path


def test_seeding_writes_every_login_to_the_credentials_file(seeded):
    credentials, _ = seeded

    assert set(credentials) == {
        "patients",
        "clinicians",
        "safety_leads",
        "compliance",
        "admin",
        "integration",
    }
    assert set(credentials["integration"]) == {"token"}
    assert len(credentials["safety_leads"]) == 2
    assert len(credentials["patients"]) == 30
    assert all(set(p) == {"pseudonym", "token"} for p in credentials["patients"])
    assert credentials["clinicians"]
    assert all(set(c) == {"username", "password", "groups"} for c in credentials["clinicians"])
    assert all(set(c) == {"username", "password"} for c in credentials["compliance"])
    assert set(credentials["admin"]) == {"username", "password"}


def test_the_credentials_file_is_readable_by_its_owner_only(seeded):
    _, path = seeded

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_patient_logins_are_the_seeded_patients(seeded):
    credentials, _ = seeded

    pseudonyms = {p["pseudonym"] for p in credentials["patients"]}
    assert pseudonyms == set(Patient.objects.values_list("pseudonym", flat=True))


def test_the_patient_tokens_work_against_the_api(seeded):
    credentials, _ = seeded

    for login in credentials["patients"][:5]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {login['token']}")
        response = client.get("/api/v1/nudges/")
        assert response.status_code == 200
        assert isinstance(response.json(), list)


def test_the_staff_passwords_work(seeded):
    credentials, _ = seeded
    staff = [*credentials["clinicians"], *credentials["compliance"], credentials["admin"]]

    for login in staff:
        user = authenticate(username=login["username"], password=login["password"])
        assert user is not None, login["username"]
        assert user.is_staff
    admin = authenticate(**credentials["admin"])
    assert admin is not None
    assert admin.is_superuser


def test_clinicians_cover_the_groups_listed_for_them(seeded):
    credentials, _ = seeded
    from django.contrib.auth import get_user_model

    from clinicians.access import covered_groups

    for login in credentials["clinicians"]:
        user = get_user_model().objects.get(username=login["username"])
        assert set(covered_groups(user).values_list("slug", flat=True)) == set(login["groups"])


def test_the_history_has_decisions_and_deliveries(seeded):
    assert Decision.objects.exists()
    assert Delivery.objects.exists()
    assert Decision.objects.filter(outcome="nudge").count() == Delivery.objects.count()


def test_every_receipt_is_a_probability_distribution(seeded):
    decided = 0
    for decision in Decision.objects.all():
        receipt = decision.receipt
        if decision.outcome == "not_available":  # e.g. nudged by the history minutes ago
            assert "candidates" not in receipt and receipt["reason"] == decision.reason != ""
            continue
        decided += 1
        total = sum(receipt["candidates"]["probability"]) + receipt["no_nudge_probability"]
        assert total == pytest.approx(1.0, abs=1e-5)
        assert all(p >= 0 for p in receipt["candidates"]["probability"])
    assert decided > 100


def test_every_nudge_in_the_history_was_a_candidate_with_a_positive_probability(seeded):
    for decision in Decision.objects.filter(outcome="nudge").select_related("template"):
        receipt = decision.receipt
        assert decision.template is not None
        key = f"{decision.template.slug}@{decision.template_version}"
        assert receipt["chosen"] == key
        index = receipt["candidates"]["template"].index(key)
        assert receipt["candidates"]["probability"][index] > 0
        assert decision.propensity == pytest.approx(
            receipt["candidates"]["probability"][index], abs=1e-6
        )


def test_historical_deliveries_are_closed(seeded):
    history = Delivery.objects.filter(decision__receipt__source="simulated_history")
    states = set(history.values_list("state", flat=True))

    assert history.exists()
    assert states <= {DeliveryState.DONE, DeliveryState.DISMISSED, DeliveryState.EXPIRED}


def test_the_history_never_holds_a_nudge_the_rules_block_or_send_to_review(seeded):
    from nudges.services.gate import gate_check

    history = list(Delivery.objects.filter(decision__receipt__source="simulated_history"))
    with transaction.atomic():  # the gate's lock lives as long as a transaction
        results = gate_check(history)

    assert history
    assert all(result.passes for result in results.values())


def test_seeding_ends_with_live_decisions_for_a_sample_of_patients(seeded):
    live = Decision.objects.exclude(receipt__has_key="source")

    assert live.exists()
    assert all(d.receipt["safety"]["ruleset"] is not None for d in live if "safety" in d.receipt)


def test_seeding_a_database_that_has_patients_is_refused(seeded, tmp_path):
    before = Patient.objects.count()

    with pytest.raises(CommandError):
        seed(tmp_path / "again")

    assert Patient.objects.count() == before
    assert not (tmp_path / "again" / "c.json").exists()


def test_if_empty_does_nothing_on_a_database_that_has_patients(seeded, tmp_path):
    credentials, path = seeded
    counts = (Patient.objects.count(), Decision.objects.count(), Delivery.objects.count())

    seed(tmp_path, if_empty=True, patients=5)

    assert (Patient.objects.count(), Decision.objects.count(), Delivery.objects.count()) == counts
    assert json.loads(path.read_text()) == credentials


def test_if_empty_seeds_an_empty_database(tmp_path):
    path = seed(tmp_path, if_empty=True, patients=5, days=0)

    assert Patient.objects.count() == 5
    assert len(json.loads(path.read_text())["patients"]) == 5


def test_zero_days_seeds_patients_without_history(tmp_path):
    seed(tmp_path, patients=5, days=0)

    assert Patient.objects.count() == 5
    assert not Decision.objects.filter(receipt__source="simulated_history").exists()


@pytest.mark.parametrize(
    "bad", [{"patients": 0}, {"patients": -3}, {"days": -1}, {"days": 366}], ids=str
)
def test_bad_arguments_are_refused_and_nothing_is_written(tmp_path, bad):
    with pytest.raises(CommandError):
        seed(tmp_path, **bad)

    assert not Patient.objects.exists()
    assert not (tmp_path / "c.json").exists()


def test_responses_in_the_history_depend_on_the_intensity_of_the_nudge(tmp_path):
    # the simulator makes high-intensity nudges less appealing (docs: SimParams), so the share
    # acted on must differ between low- and high-intensity templates
    seed(tmp_path, patients=300, days=20, seed=7)

    shares = {}
    rows = Delivery.objects.values("template__intensity").annotate(
        total=Count("id"), done=Count("id", filter=Q(state=DeliveryState.DONE))
    )
    for row in rows:
        shares[row["template__intensity"]] = (row["done"] / row["total"], row["total"])
    low, low_n = shares["low"]
    high, high_n = shares["high"]
    assert low_n > 300 and high_n > 300
    assert low - high > 0.05
    assert low > shares["moderate"][0] > high
