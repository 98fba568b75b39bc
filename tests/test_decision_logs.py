"""Decision logs in and out (docs/decision-log.md): keyed pseudonyms for imported patients, an
import that is all or nothing and names the bad lines, reading a data set back, and the
engine's own decisions exported in the same format."""

import datetime as dt
import hashlib
import hmac
import math
import re
import stat
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from core.errors import ApplicationError
from nudges import measures
from nudges.decision_log import NONE, dumps, from_records, iter_lines, read_lines
from nudges.models import Decision, Event, ImportedDecision
from nudges.services import decision_logs
from nudges.services.decision_logs import (
    decisions_import,
    engine_log,
    engine_records,
    imported_log,
)
from privacy.pseudonyms import pseudonym

RAW_ID = "MRN-0042-secret"
DOCUMENTED_CONTEXT = {"age_band", "sex", "tenure_days", "local_hour", "weekday", "trigger"}


def record(patient: str = RAW_ID, time: str = "2026-01-05T09:00:00Z", **changes) -> dict:
    base = {
        "patient": patient,
        "time": time,
        "available": ["walk", "sleep"],
        "context": {"age_band": "45-59", "local_hour": 9, "g_copd": 1},
        "action": "walk",
        "propensity": 0.6,
        "distribution": {"walk": 0.6, "sleep": 0.3, NONE: 0.1},
        "outcome": {"reward": 0.25, "acted": True, "health_delta": 0.5},
    }
    base.update(changes)
    return base


def valid_records(n: int = 5) -> list[dict]:
    return [
        record(patient=f"{RAW_ID}-{i % 2}", time=f"2026-01-0{i + 1}T09:00:00Z") for i in range(n)
    ]


def write(path, records: list) -> str:
    lines = [r if isinstance(r, bytes) else dumps(r) for r in records]
    path.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
    return str(path)


# Pseudonyms ---------------------------------------------------------------------------------


def test_a_pseudonym_is_the_keyed_hmac_of_namespace_and_identifier(settings):
    settings.PSEUDONYM_KEYS = {"1": "key-one"}
    settings.PSEUDONYM_KEY_VERSION = "1"

    made = pseudonym(RAW_ID, namespace="trial")

    expected = hmac.new(b"key-one", f"trial:{RAW_ID.casefold()}".encode(), hashlib.sha256)
    assert made == "p1_" + expected.hexdigest()[:32]
    assert made[3:] != hashlib.sha256(RAW_ID.encode()).hexdigest()[:32]
    assert re.fullmatch(r"p1_[0-9a-f]{32}", made)


def test_the_same_identifier_and_namespace_give_the_same_pseudonym_and_others_differ(settings):
    settings.PSEUDONYM_KEYS = {"1": "key-one", "2": "key-two"}
    settings.PSEUDONYM_KEY_VERSION = "1"

    first = pseudonym(RAW_ID, namespace="trial")

    assert pseudonym(f"  {RAW_ID.lower()} ", namespace="trial") == first
    assert pseudonym(RAW_ID, namespace="other-trial") != first
    assert pseudonym(RAW_ID + "x", namespace="trial") != first
    other_key = pseudonym(RAW_ID, namespace="trial", version="2")
    assert other_key.startswith("p2_")
    assert other_key[3:] != first[3:]


def test_the_current_key_version_is_the_one_used(settings):
    settings.PSEUDONYM_KEYS = {"1": "key-one", "2": "key-two"}
    settings.PSEUDONYM_KEY_VERSION = "2"

    assert pseudonym(RAW_ID, namespace="trial") == pseudonym(RAW_ID, namespace="trial", version="2")


def test_a_namespace_with_a_colon_is_refused():
    with pytest.raises(ValueError):
        pseudonym(RAW_ID, namespace="a:b")


# Import -------------------------------------------------------------------------------------


def test_an_import_stores_pseudonymised_patients_and_never_the_raw_id(tmp_path):
    path = write(tmp_path / "log.jsonl", valid_records(5))

    count = decisions_import(path=path, dataset="trial")

    assert count == 5
    stored = set(ImportedDecision.objects.values_list("pseudonym", flat=True))
    assert stored == {pseudonym(f"{RAW_ID}-{i}", namespace="trial") for i in (0, 1)}
    table = connection.ops.quote_name(ImportedDecision._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - a fixed table name
        text = repr(cursor.fetchall())
    assert "MRN" not in text.upper()
    assert RAW_ID.lower() not in text.lower()


BAD_LINES = {
    "malformed JSON": b'{"patient": "x", "time": ',
    "probability 0": dumps(record(propensity=0, distribution=None)),
    "probability 1.5": dumps(record(propensity=1.5, distribution=None)),
    "unknown field": dumps(record(colour="red")),
    "action not available": dumps(record(action="swim", distribution=None)),
    "distribution not summing to 1": dumps(
        record(distribution={"walk": 0.6, "sleep": 0.6, NONE: 0.1})
    ),
    "missing propensity": dumps({k: v for k, v in record().items() if k != "propensity"}),
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_file_with_one_bad_line_imports_nothing_and_names_the_line(tmp_path, bad):
    lines = valid_records(5)
    lines[2] = bad
    path = write(tmp_path / "log.jsonl", lines)

    with pytest.raises(ApplicationError) as refused:
        decisions_import(path=path, dataset="trial")

    assert "line 3:" in refused.value.message
    assert [e["line"] for e in refused.value.fields["lines"]] == [3]
    assert RAW_ID not in refused.value.message
    assert not ImportedDecision.objects.exists()


def test_a_bad_line_after_chunks_were_inserted_still_imports_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(decision_logs, "CHUNK_LINES", 2)
    lines: list[dict | bytes] = [*valid_records(7)]
    lines[5] = BAD_LINES["probability 0"]
    lines[6] = BAD_LINES["unknown field"]
    path = write(tmp_path / "log.jsonl", lines)

    with pytest.raises(ApplicationError) as refused:
        decisions_import(path=path, dataset="trial")

    assert [e["line"] for e in refused.value.fields["lines"]] == [6, 7]
    assert not ImportedDecision.objects.exists()


def test_two_lines_for_the_same_patient_and_time_import_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(decision_logs, "CHUNK_LINES", 2)
    lines = valid_records(4)
    lines.append(record(patient=f"{RAW_ID}-0", time="2026-01-01T09:00:00+00:00"))
    path = write(tmp_path / "log.jsonl", lines)

    with pytest.raises(ApplicationError) as refused:
        decisions_import(path=path, dataset="trial")

    assert refused.value.fields["lines"] == [
        {"line": 5, "reason": "repeats the patient and time of line 1"}
    ]
    assert not ImportedDecision.objects.exists()


def test_importing_a_data_set_again_is_refused(tmp_path):
    path = write(tmp_path / "log.jsonl", valid_records(5))
    decisions_import(path=path, dataset="trial")

    with pytest.raises(ApplicationError) as refused:
        decisions_import(path=path, dataset="trial")

    assert refused.value.code == "conflict"
    assert ImportedDecision.objects.filter(dataset="trial").count() == 5


def test_replace_swaps_the_data_set_whole(tmp_path):
    decisions_import(path=write(tmp_path / "a.jsonl", valid_records(5)), dataset="trial")

    count = decisions_import(
        path=write(tmp_path / "b.jsonl", valid_records(2)), dataset="trial", replace=True
    )

    assert count == 2
    assert ImportedDecision.objects.filter(dataset="trial").count() == 2


def test_the_same_patient_in_two_data_sets_gets_two_pseudonyms(tmp_path):
    path = write(tmp_path / "log.jsonl", [record()])
    decisions_import(path=path, dataset="trial-a")
    decisions_import(path=path, dataset="trial-b")

    names = dict(ImportedDecision.objects.values_list("dataset", "pseudonym"))

    assert names["trial-a"] != names["trial-b"]


def test_a_data_set_name_must_be_a_slug(tmp_path):
    path = write(tmp_path / "log.jsonl", [record()])

    with pytest.raises(ApplicationError):
        decisions_import(path=path, dataset="Trial 1")


def test_opaque_action_ids_are_kept_as_they_are(tmp_path):
    opaque = ["campaign-7/variant:B", "x9"]
    line = record(
        available=opaque,
        action=opaque[0],
        distribution={opaque[0]: 0.6, opaque[1]: 0.3, NONE: 0.1},
    )
    decisions_import(path=write(tmp_path / "log.jsonl", [line]), dataset="trial")

    row = ImportedDecision.objects.get()
    log = imported_log(dataset="trial")

    assert row.action == opaque[0]
    assert row.available == opaque
    assert log.actions[log.action[0]] == opaque[0]


def test_no_nudge_is_stored_as_a_blank_action(tmp_path):
    line = record(action=None, propensity=0.1)
    decisions_import(path=write(tmp_path / "log.jsonl", [line]), dataset="trial")

    assert ImportedDecision.objects.get().action == ""
    assert imported_log(dataset="trial").action[0] == -1


def test_an_imported_log_reads_back_as_it_was_written(tmp_path):
    lines = valid_records(5)
    lines[1] = record(
        patient="other",
        time="2026-01-02T10:00:00+01:00",
        action=None,
        propensity=0.1,
        true_values={"walk": 0.4, NONE: 0.0},
        outcome={"reward": 0.0},
        context={"sex": "male", "tenure_days": 3.5},
    )
    lines[3] = record(time="2026-01-04T09:00:00Z", distribution=None)
    path = write(tmp_path / "log.jsonl", lines)
    original = read_lines(iter_lines(path))
    decisions_import(path=path, dataset="trial")

    log = imported_log(dataset="trial")

    order = np.argsort(original.time, kind="stable")
    names = np.array([pseudonym(p, namespace="trial") for p in original.patients])
    assert list(log.patients) == list(names[order])
    np.testing.assert_allclose(log.time, original.time[order], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(log.propensity, original.propensity[order])
    for name in ("reward", "acted", "health_delta", "none_prob", "none_true"):
        np.testing.assert_array_equal(getattr(log, name), getattr(original, name)[order])
    for i, j in enumerate(order):
        assert _action(log, i) == _action(original, j)
        assert _available(log, i) == _available(original, j)
    for key, column in original.context.items():
        np.testing.assert_array_equal(log.context[key], column[order])


def _action(log, i):
    return None if log.action[i] < 0 else log.actions[log.action[i]]


def _available(log, i):
    rows = log.rows_of(i)
    known = [
        [None if math.isnan(x) else x for x in v[rows].tolist()]
        for v in (log.avail_prob, log.avail_true)
    ]
    return [(log.actions[a], known[0][k], known[1][k]) for k, a in enumerate(log.avail[rows])]


def test_reading_an_unknown_data_set_is_not_found():
    with pytest.raises(ApplicationError) as missing:
        imported_log(dataset="nothing-here")

    assert missing.value.status == 404


def test_the_import_command_prints_the_count(tmp_path, capsys):
    path = write(tmp_path / "log.jsonl", valid_records(3))

    call_command("import_decisions", path, dataset="trial", verbosity=0)

    assert "Imported 3 decisions" in capsys.readouterr().out


def test_the_import_command_names_the_bad_lines(tmp_path):
    lines: list[dict | bytes] = [*valid_records(3)]
    lines[1] = BAD_LINES["malformed JSON"]
    path = write(tmp_path / "log.jsonl", lines)

    with pytest.raises(CommandError, match="line 2: not valid JSON"):
        call_command("import_decisions", path, dataset="trial", verbosity=0)


# Health deltas (pure) -----------------------------------------------------------------------


def test_the_measures_are_the_ones_the_demo_writes():
    from demo.seeding import MEASURES

    assert {g: (m.kind, m.scale) for g, m in measures.MEASURES.items()} == {
        g: (kind, scale) for g, (kind, _, scale, _) in MEASURES.items()
    }


def test_health_delta_is_after_minus_before_in_standard_units_higher_better():
    activity, diet = measures.GOALS.index("activity"), measures.GOALS.index("diet")
    days = np.arange(100, 106)  # decision on day 102: before 100-102, after 103-105
    steps = [5000, 5200, 5400, 6000, 6200, 6400]  # before mean 5200, after mean 6200
    weights = [80, 80, 80, 79, 79, 79]  # lost 1 kg: better
    means = measures.daily_means(
        patient=np.zeros(12, dtype=int),
        goal=np.array([activity] * 6 + [diet] * 6),
        day=np.concatenate([days, days]),
        value=np.array(steps + weights, dtype=float),
    )

    delta = measures.health_delta(
        means, np.array([0, 0, 0]), np.array([activity, diet, activity]), np.array([102, 102, 90])
    )

    assert delta[0] == pytest.approx(1000 / 1200)
    assert delta[1] == pytest.approx(-1 / -0.5)
    assert np.isnan(delta[2])


# The engine's own decisions -----------------------------------------------------------------


def seed(tmp_path) -> dt.datetime:
    call_command("seed_demo", patients=60, days=10, seed=1, credentials=tmp_path / "c.json")
    return timezone.now()


@pytest.mark.django_db(transaction=True)
def test_the_engine_log_is_a_valid_decision_log_with_the_decisions_propensities(tmp_path):
    now = seed(tmp_path)
    since, until = now - dt.timedelta(days=30), now + dt.timedelta(minutes=1)

    records = list(engine_records(since=since, until=until))
    log = read_lines(dumps(r) for r in records)

    drawn = Decision.objects.filter(outcome__in=["nudge", "no_nudge"])
    assert len(log) == drawn.count() > 0
    propensities = {
        (d.patient.pseudonym, d.decision_point.moment): d.propensity
        for d in drawn.select_related("patient", "decision_point")
    }
    for r in records:
        assert r["propensity"] == propensities[(r["patient"], dt.datetime.fromisoformat(r["time"]))]
    groups = {f"g_{g}" for g in ("copd", "hypertension", "pregnancy")}
    weights = {f"w_{g}" for g in measures.GOALS}
    assert DOCUMENTED_CONTEXT | groups | weights <= set(log.context)
    assert np.isfinite(log.reward).any() and np.isfinite(log.health_delta).any()


@pytest.mark.django_db(transaction=True)
def test_the_engine_log_says_what_its_records_say(tmp_path):
    now = seed(tmp_path)
    since, until = now - dt.timedelta(days=30), now + dt.timedelta(minutes=1)

    log = engine_log(since=since, until=until)
    expected = from_records(list(engine_records(since=since, until=until)))

    assert len(log) == len(expected) > 0
    np.testing.assert_array_equal(log.patients, expected.patients)
    np.testing.assert_allclose(log.time, expected.time, rtol=0, atol=1e-9)
    for name in ("offsets", "propensity", "none_prob", "reward", "acted", "health_delta"):
        np.testing.assert_array_equal(getattr(log, name), getattr(expected, name))
    for i in range(len(log)):
        assert _action(log, i) == _action(expected, i)
        assert _available(log, i) == _available(expected, i)
    assert set(log.context) == set(expected.context)
    for key, column in expected.context.items():
        np.testing.assert_array_equal(log.context[key], column, err_msg=key)


@pytest.mark.django_db(transaction=True)
def test_an_exported_health_delta_is_the_change_of_the_goal_measure_in_local_days(tmp_path):
    now = seed(tmp_path)
    records = list(engine_records(since=now - dt.timedelta(days=30), until=now))
    nudged = [r for r in records if "health_delta" in r["outcome"]]
    assert nudged

    for r in nudged:
        decision = Decision.objects.select_related("patient", "template").get(
            patient__pseudonym=r["patient"],
            decision_point__moment=dt.datetime.fromisoformat(r["time"]),
        )
        assert r["outcome"]["health_delta"] == pytest.approx(_by_hand(decision), abs=1e-5)
        if "reward" in r["outcome"]:
            assert decision.template is not None
            weight = decision.receipt["agenda"][decision.template.goal]
            acted = r["outcome"].get("acted", False)
            assert r["outcome"]["reward"] == pytest.approx(
                weight * acted * r["outcome"]["health_delta"], abs=1e-5
            )


def _by_hand(decision: Decision) -> float:
    assert decision.template is not None
    patient, measure = decision.patient, measures.MEASURES[decision.template.goal]
    zone = ZoneInfo(patient.timezone)
    day = decision.decision_point.moment.astimezone(zone).date()
    daily: dict[dt.date, list[float]] = {}
    for value, at in Event.objects.filter(patient=patient, kind=measure.kind).values_list(
        "value", "occurred_at"
    ):
        daily.setdefault(at.astimezone(zone).date(), []).append(value)

    def mean_of(offsets: range) -> float:
        values = [
            np.mean(daily[day + dt.timedelta(days=k)])
            for k in offsets
            if day + dt.timedelta(days=k) in daily
        ]
        return float(np.mean(values))

    return (mean_of(range(1, 4)) - mean_of(range(-2, 1))) / measure.scale


@pytest.mark.django_db(transaction=True)
def test_export_decisions_writes_a_log_for_its_owner_only(tmp_path, capsys):
    seed(tmp_path)
    out = tmp_path / "engine.jsonl"

    call_command("export_decisions", out=out, days=30, verbosity=0)

    log = read_lines(iter_lines(out))
    assert len(log) == Decision.objects.filter(outcome__in=["nudge", "no_nudge"]).count()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert f"Exported {len(log)} decisions" in capsys.readouterr().out
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert set(first) >= {"patient", "time", "available", "action", "propensity", "context"}
