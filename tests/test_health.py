"""Liveness, readiness, and how the API answers while the database is down."""

import pytest
from django.db import OperationalError, connections

from config.celery import app as celery_app

pytestmark = pytest.mark.django_db

UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"
SECRET_DETAIL = "could not connect to server at db.internal:5432"


@pytest.fixture
def broker_unreachable(monkeypatch):
    """Point Celery at a port where nothing listens. Celery reads CELERY_BROKER_URL and
    CELERY_BROKER_WRITE_URL from the environment before its configuration, so (as in CI,
    where they name a real Redis) those are overridden too."""
    monkeypatch.setitem(celery_app.conf, "broker_url", UNREACHABLE_BROKER)
    monkeypatch.setenv("CELERY_BROKER_URL", UNREACHABLE_BROKER)
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", UNREACHABLE_BROKER)


@pytest.fixture
def database_down(monkeypatch):
    """Every new cursor fails as it would with the database server gone."""

    def refuse(self, *args, **kwargs):
        raise OperationalError(SECRET_DETAIL)

    monkeypatch.setattr(type(connections["default"]), "cursor", refuse)


def test_healthz_answers_200_while_the_process_runs(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_answers_even_while_the_database_is_down(client, database_down):
    assert client.get("/healthz").status_code == 200


def test_readyz_answers_200_when_the_database_and_broker_answer(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "broker": "ok"}
    assert body["parts"]["model"] == "ok"


def test_readyz_answers_503_naming_the_broker_when_it_is_unreachable(client, broker_unreachable):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "unreachable"}
    assert response.json()["status"] != "ready"


def test_readyz_answers_503_naming_the_database_when_it_is_unreachable(client, database_down):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unreachable", "broker": "ok"}


def test_readyz_is_never_cached(client):
    response = client.get("/readyz")

    assert "no-cache" in response.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/nudges/", None),
        ("get", "/api/v1/me/", None),
        ("post", "/api/v1/decisions/", {}),
        ("post", "/api/v1/events/", {"events": []}),
    ],
)
def test_an_api_request_during_a_database_outage_answers_503_with_the_uniform_error(
    api_a, database_down, method, path, body
):
    response = getattr(api_a, method)(path, body, format="json")

    assert response.status_code == 503
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["code"] == "unavailable"
    assert set(response.json()["error"]) == {"code", "message", "fields"}
    text = response.content.decode()
    assert "Traceback" not in text
    assert "OperationalError" not in text
    assert SECRET_DETAIL not in text
