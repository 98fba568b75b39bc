"""Who reaches the DP reports: compliance officers, through the API and the admin, and nobody
else (404); and compliance officers never reach raw rows."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from privacy.exports import export_verify
from privacy.models import PrivacyBudget, Release
from tests.factories import token_for
from tests.test_privacy_dp_release import PERIOD, deliver, make_officer

pytestmark = pytest.mark.django_db

REQUEST = {"report": "acceptance", "period": PERIOD, "budget": 0.1}


@pytest.fixture
def officer(db):
    return make_officer()


@pytest.fixture
def officer_api(officer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(officer)}")
    return client


@pytest.fixture
def officer_admin(officer) -> Client:
    client = Client()
    client.force_login(officer)
    return client


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def _released(client: APIClient) -> dict:
    response = client.post("/api/v1/reports/releases/", REQUEST, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# The API ------------------------------------------------------------------------------------


def test_a_compliance_officer_lists_the_catalogue(officer_api):
    response = officer_api.get("/api/v1/reports/")

    assert response.status_code == 200
    names = [r["name"] for r in response.json()["reports"]]
    assert names == ["engagement", "acceptance", "health_change", "review_outcomes"]


def test_a_dry_run_over_the_api_shows_intervals_and_spends_nothing(officer_api):
    response = officer_api.post("/api/v1/reports/dry-run/", REQUEST, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["privacy_loss"]["rho"] == 0.1
    assert body["aggregates"][0]["half_width"] > 0
    assert not PrivacyBudget.objects.exists()


def test_a_release_over_the_api_is_stored_fetched_and_exported_for_free(officer_api, patient_a):
    deliver(patient_a[0], day=4, state="done")

    release = _released(officer_api)
    fetched = officer_api.get(f"/api/v1/reports/releases/{release['id']}/")
    listed = officer_api.get("/api/v1/reports/releases/")
    exports = [
        officer_api.get(f"/api/v1/reports/releases/{release['id']}/export/{fmt}/")
        for fmt in ("csv", "json", "html")
    ]

    assert fetched.status_code == 200
    assert fetched.json()["results"] == release["results"]
    assert [r["id"] for r in listed.json()] == [release["id"]]
    for export in exports:
        assert export.status_code == 200
        assert export_verify(export.content)["release_id"] == release["id"]
    assert PrivacyBudget.objects.get(period=PERIOD).spent_nanorho == 100_000_000
    budget = officer_api.get(f"/api/v1/reports/budget/{PERIOD}/").json()
    assert budget["spent_rho"] == 0.1


def test_a_repeated_release_with_an_idempotency_key_spends_once(officer_api):
    headers = {"HTTP_IDEMPOTENCY_KEY": "release-1"}
    first = officer_api.post("/api/v1/reports/releases/", REQUEST, format="json", **headers)
    again = officer_api.post("/api/v1/reports/releases/", REQUEST, format="json", **headers)

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert Release.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**REQUEST, "budget": 0}, 400, "budget"),
        ({**REQUEST, "budget": -1}, 400, "budget"),
        ({**REQUEST, "period": "2025-3"}, 400, "period"),
        ({**REQUEST, "period": "2099-01"}, 400, "period"),
        ({**REQUEST, "report": "raw_rows"}, 400, "report"),
        ({**REQUEST, "budget": 5}, 409, "budget"),
        ({**REQUEST, "columns": ["pseudonym"]}, 400, "columns"),
    ],
)
def test_a_bad_release_is_refused_naming_the_problem_and_spends_nothing(
    officer_api, body, status, field
):
    response = officer_api.post("/api/v1/reports/releases/", body, format="json")

    assert response.status_code == status
    error = response.json()["error"]
    assert field in error["fields"]
    assert not Release.objects.exists()
    assert PrivacyBudget.objects.filter(spent_nanorho__gt=0).count() == 0


def test_users_other_than_compliance_officers_get_404_from_every_report_endpoint(
    officer_api, api_a, outsider_api, clinician_cardio
):
    release = _released(officer_api)
    urls = [
        "/api/v1/reports/",
        "/api/v1/reports/releases/",
        f"/api/v1/reports/releases/{release['id']}/",
        f"/api/v1/reports/releases/{release['id']}/export/csv/",
        f"/api/v1/reports/budget/{PERIOD}/",
    ]
    for client in (api_a, outsider_api, _api(clinician_cardio)):
        for url in urls:
            assert client.get(url).status_code == 404, url
        assert client.post("/api/v1/reports/releases/", REQUEST, format="json").status_code == 404
        assert client.post("/api/v1/reports/dry-run/", REQUEST, format="json").status_code == 404
    assert Release.objects.count() == 1


def test_an_anonymous_request_to_the_reports_is_unauthenticated(anonymous):
    assert anonymous.get("/api/v1/reports/").status_code == 401


def test_a_compliance_officer_is_refused_by_the_patient_api(officer_api):
    for url in ("/api/v1/nudges/", "/api/v1/me/"):
        assert officer_api.get(url).status_code in (403, 404), url


# The admin ----------------------------------------------------------------------------------

RAW_ADMIN_PAGES = [
    "/admin/nudges/delivery/",
    "/admin/nudges/decision/",
    "/admin/nudges/pushmessage/",
    "/admin/nudges/template/",
    "/admin/clinicians/reviewqueueitem/",
    "/admin/clinicians/reviewdecision/",
    "/admin/auth/user/",
]


def test_a_compliance_officer_gets_403_or_404_from_raw_data_admin_pages(officer_admin):
    for url in RAW_ADMIN_PAGES:
        assert officer_admin.get(url).status_code in (403, 404), url


def test_a_compliance_officer_previews_releases_and_browses_a_report_in_the_admin(
    officer_admin, patient_a
):
    deliver(patient_a[0], day=4, state="done")
    form = {"report": "acceptance", "period": PERIOD, "budget": "0.1"}

    catalogue = officer_admin.get("/admin/privacy/release/catalogue/")
    preview = officer_admin.post("/admin/privacy/release/catalogue/", {**form, "preview": "1"})
    assert not PrivacyBudget.objects.exists()
    released = officer_admin.post("/admin/privacy/release/catalogue/", {**form, "release": "1"})
    release = Release.objects.get()
    detail = officer_admin.get(f"/admin/privacy/release/{release.pk}/change/")
    export = officer_admin.get(f"/admin/privacy/release/{release.pk}/export/html/")
    listing = officer_admin.get("/admin/privacy/release/")
    ledger = officer_admin.get("/admin/privacy/privacybudget/")

    assert catalogue.status_code == 200
    assert b"Review-queue outcomes per medical group" in catalogue.content
    assert preview.status_code == 200
    assert b"Would spend rho 0.1" in preview.content
    assert b'name="release"' in preview.content
    assert released.status_code == 302
    assert detail.status_code == 200
    assert b"<svg" in detail.content
    assert export_verify(export.content)["release_id"] == str(release.pk)
    assert listing.status_code == ledger.status_code == 200
    assert PrivacyBudget.objects.get().spent_nanorho == 100_000_000


def test_a_bad_request_in_the_admin_names_the_field_and_spends_nothing(officer_admin):
    response = officer_admin.post(
        "/admin/privacy/release/catalogue/",
        {"report": "acceptance", "period": "2025-03", "budget": "-1", "release": "1"},
    )

    assert response.status_code == 200
    assert "budget" in response.context["form"].errors
    assert not Release.objects.exists()


def test_staff_other_than_compliance_officers_get_404_from_the_report_admin(
    officer_api, clinician_cardio
):
    release = _released(officer_api)
    client = Client()
    client.force_login(clinician_cardio)
    urls = [
        "/admin/privacy/release/",
        "/admin/privacy/release/catalogue/",
        f"/admin/privacy/release/{release['id']}/change/",
        f"/admin/privacy/release/{release['id']}/export/csv/",
        "/admin/privacy/privacybudget/",
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
    response = client.post(
        "/admin/privacy/release/catalogue/", {**REQUEST, "budget": "0.1", "release": "1"}
    )
    assert response.status_code == 404
    assert Release.objects.count() == 1
