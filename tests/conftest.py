"""The cast every test can use: two patients, a clinician per covered group, a clinician of
another group, a compliance officer and an outsider; the catalogue and groups loaded."""

import os
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from clinicians.roles import CLINICIAN
from nudges.models import Template, TemplateStatus
from nudges.services.catalogue import templates_load, templates_signoff
from safety.services import medical_groups_load, ruleset_load_file
from tests.factories import UserFactory, make_clinician, make_patient, token_for


def _vendor() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"


def pytest_collection_modifyitems(config, items):
    """Tests that need a real service say so with a marker. Without the service they are
    skipped, visibly; with REQUIRE_SERVICES=1 (CI's second pass) a missing service fails."""
    have = {
        "postgres": _vendor() == "postgresql",
        "redis": os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"),
        "browser": os.path.exists(os.environ.get("CHROMIUM", "/usr/bin/chromium")),
    }
    if os.environ.get("REQUIRE_SERVICES") == "1":
        missing = [marker for marker, available in have.items() if not available]
        if missing:
            raise pytest.UsageError(f"REQUIRE_SERVICES=1 but not available: {missing}")
    for item in items:
        for marker, available in have.items():
            if marker in item.keywords and not available:
                item.add_marker(pytest.mark.skip(reason=f"needs {marker}; see docs/operations.md"))


def load_catalogue() -> None:
    """Groups, the shipped rule set (active) and the template catalogue, signed off."""
    medical_groups_load()
    ruleset_load_file()
    templates_load()
    signer = UserFactory.create(username="catalogue-signer")
    signer.groups.add(Group.objects.get(name=CLINICIAN))
    templates_signoff(
        templates=list(Template.objects.filter(status=TemplateStatus.PENDING)), by=signer
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The catalogue is loaded once into the test database; each test's transaction rolls
    back to it."""
    with django_db_blocker.unblock():
        load_catalogue()


@pytest.fixture(autouse=True)
def catalogue(db):
    """Transactional tests empty the database when they end: reload after one of them."""
    if not Template.objects.filter(status=TemplateStatus.ACTIVE).exists():
        load_catalogue()


@dataclass
class Actor:
    user: object
    client: APIClient


def _client(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def patient_a(db):
    return make_patient(goals={"activity": 0.8, "sleep": 0.4}, groups=("hypertension",))


@pytest.fixture
def patient_b(db):
    return make_patient(goals={"mood": 0.9, "diet": 0.5}, groups=("depression",))


@pytest.fixture
def api_a(patient_a) -> APIClient:
    return _client(patient_a[1])


@pytest.fixture
def api_b(patient_b) -> APIClient:
    return _client(patient_b[1])


@pytest.fixture
def anonymous() -> APIClient:
    return _client(None)


@pytest.fixture
def clinician_cardio(db):
    return make_clinician("clin-cardio", ("hypertension", "heart-failure"))


@pytest.fixture
def clinician_mental(db):
    return make_clinician("clin-mental", ("depression", "eating-disorder"))


@pytest.fixture
def clinician_other(db):
    """Covers a group none of the cast's patients is in."""
    return make_clinician("clin-resp", ("copd",))


@pytest.fixture
def compliance_officer(db):
    return UserFactory.create(username="compliance")


@pytest.fixture
def outsider(db):
    return UserFactory.create(username="outsider", is_staff=False)


@pytest.fixture
def outsider_api(outsider) -> APIClient:
    return _client(token_for(outsider))


@pytest.fixture(scope="session")
def trained_bundle():
    """A model trained on a small simulated world's baseline log (no database; ~seconds)."""
    from nudges import offline

    setup = offline.world_from_cohort(150, seed=5)
    return offline.train_on_baseline(setup, days=20, seed=6).bundle


def promote_bundle(bundle, settings, directory):
    """Register `bundle` and make it the champion (artefacts under `directory`)."""
    from django.utils import timezone

    from nudges.services.registry import baseline_ensure, model_promote, model_register

    settings.NUDGE_MODELS_DIR = directory
    baseline_ensure()
    row = model_register(
        bundle=bundle, metrics={}, trained_from=timezone.now(), trained_to=timezone.now()
    )
    model_promote(version=row.version)
    return row


@pytest.fixture(params=["baseline", "agenda"])
def policy_in_force(request, settings, tmp_path, trained_bundle):
    """Runs a test once under the baseline and once under the agenda policy (a promoted
    champion, with no cold start so that even new patients get it)."""
    if request.param == "agenda":
        settings.NUDGE_MIN_TENURE_DAYS = 0
        promote_bundle(trained_bundle, settings, tmp_path / "models")
    return request.param
