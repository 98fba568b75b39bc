"""seed_demo: a synthetic cohort enrolled through the enrolment service (as the clinic's
integration enrols patients, with synthetic identifiers), staff logins, and
about 90 days of history (decisions with full receipts, deliveries, feedback, daily health
measures) drawn from the ground-truth simulator under the baseline policy, so that responses
depend on the patient and the nudge and the first model has something real to learn."""

import datetime as dt
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from clinicians.access import clinician_groups_set
from clinicians.roles import CLINICIAN, COMPLIANCE, INTEGRATION, SAFETY_LEAD
from core.bulk import DbFormat, insert_rows
from demo.cohort import CONDITIONS, SyntheticPatient, synthetic_cohort
from nudges import baseline, simulator
from nudges import rows as columns
from nudges.decide import SafetyTable, Snapshot, receipt_finish, receipt_head, safety_receipt
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    Event,
    Outcome,
    Template,
    TemplateStatus,
    Trigger,
)
from nudges.services.catalogue import catalogue_snapshot, templates_load, templates_signoff
from nudges.services.decisions import decision_make
from nudges.services.popularity import popularity_refresh
from nudges.why import explain
from patients.enrolment import Enrolment
from patients.models import Patient
from privacy.enrolment import enrolments_create
from safety.models import MedicalGroup
from safety.rules import Action
from safety.services import medical_groups_load, ruleset_load_file

# Clinician teams and the medical groups each covers.
TEAMS: dict[str, tuple[str, ...]] = {
    "cardiology": ("heart-failure", "hypertension"),
    "diabetes": ("type-2-diabetes", "insulin-treated"),
    "respiratory": ("copd",),
    "maternity": ("pregnancy",),
    "renal": ("chronic-kidney-disease",),
    "mental-health": ("depression", "eating-disorder"),
}

# How each goal's health measure appears in the app's events: (kind, level, units per unit of
# simulated health, decimals). A negative scale means lower is better.
MEASURES: dict[str, tuple[str, float, float, int]] = {
    "activity": ("steps", 5500.0, 1200.0, 0),
    "medication": ("medication_taken", 0.75, 0.08, 2),
    "sleep": ("sleep_hours", 6.4, 0.35, 1),
    "diet": ("weight_kg", 84.0, -0.5, 1),
    "mood": ("mood_score", 5.5, 0.8, 1),
    "hydration": ("water_ml", 1400.0, 250.0, 0),
    "monitoring": ("systolic_bp", 138.0, -3.0, 0),
}
MEASURE_HOUR = 21  # local time the daily measures are recorded
ENROL_BATCH = 1000
CURRENT_SAMPLE = 400  # patients who get a live decision at the end of seeding
FLUSH_DAYS = 10  # days of history written per transaction


@dataclass(frozen=True)
class SeedResult:
    patients: int
    decision_points: int
    deliveries: int
    events: int
    seconds: float


class Progress:
    """What seeding reports as it goes; the command shows it as a progress bar."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


def demo_seed(
    *,
    patients: int,
    seed: int,
    days: int,
    credentials_path: Path,
    progress: Progress | None = None,
) -> SeedResult:
    """Seed an empty database: groups, catalogue, staff, `patients` patients and `days` days
    of history ending yesterday. Writes the logins to credentials_path (mode 600)."""
    progress = progress or Progress()
    started = timezone.now()
    _bulk_load_mode()
    with transaction.atomic():
        medical_groups_load()
        ruleset_load_file()
        templates_load()
        staff = _staff_create()
        # The shipped catalogue is signed off by the demo's first clinician.
        templates_signoff(
            templates=list(Template.objects.filter(status=TemplateStatus.PENDING)),
            by=User.objects.get(username=staff["clinicians"][0]["username"]),
        )
    cohort = synthetic_cohort(patients, seed=seed)
    enrolled = _enrol(cohort, progress, seed=seed)
    counts = {"points": 0, "deliveries": 0, "events": 0}
    if days > 0:
        counts = _history(cohort, enrolled, seed=seed, days=days, progress=progress)
    popularity_refresh()
    _current_decisions(enrolled, seed=seed, progress=progress)
    _write_credentials(credentials_path, enrolled, staff)
    return SeedResult(
        patients=len(enrolled),
        decision_points=counts["points"],
        deliveries=counts["deliveries"],
        events=counts["events"],
        seconds=(timezone.now() - started).total_seconds(),
    )


def _bulk_load_mode() -> None:
    """SQLite only: a large page cache and no fsync per commit while seeding. A seed that is
    interrupted leaves a database to delete anyway, so durability buys nothing here."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-262144")


def _staff_create() -> dict[str, Any]:
    """Clinicians of each team (covering its groups), two safety leads (one writes a rule
    change, the other signs it off), a compliance officer and an administrator, with random
    passwords (hashed in parallel: each hash is deliberately slow), and the clinic's
    integration (a token, no password)."""
    user_model = get_user_model()
    accounts = [(f"clin-{team}", team) for team in TEAMS] + [
        ("safety-lead-1", None),
        ("safety-lead-2", None),
        ("compliance", None),
        ("admin", None),
    ]
    passwords = {name: secrets.token_urlsafe(12) for name, _ in accounts}
    with ThreadPoolExecutor(max_workers=2) as pool:
        hashed = dict(zip(passwords, pool.map(make_password, passwords.values()), strict=True))
    groups = {g.slug: g for g in MedicalGroup.objects.all()}
    roles = {g.name: g for g in Group.objects.filter(name__in=[CLINICIAN, SAFETY_LEAD, COMPLIANCE])}
    staff: dict[str, Any] = {"clinicians": [], "safety_leads": [], "compliance": [], "admin": None}
    for name, team in accounts:
        user = user_model.objects.create(
            username=name,
            password=hashed[name],
            is_staff=True,
            is_superuser=name == "admin",
        )
        if team is not None:
            user.groups.add(roles[CLINICIAN])
            clinician_groups_set(user=user, groups=[groups[slug] for slug in TEAMS[team]])
            staff["clinicians"].append(
                {"username": name, "password": passwords[name], "groups": list(TEAMS[team])}
            )
        elif name.startswith("safety-lead"):
            user.groups.add(roles[SAFETY_LEAD])
            staff["safety_leads"].append({"username": name, "password": passwords[name]})
        elif name == "compliance":
            user.groups.add(roles[COMPLIANCE])
            staff["compliance"].append({"username": name, "password": passwords[name]})
        else:
            staff["admin"] = {"username": name, "password": passwords[name]}
    integration = user_model.objects.create(username="integration", password=make_password(None))
    integration.groups.add(Group.objects.get(name=INTEGRATION))
    staff["integration"] = {"token": Token.objects.create(user=integration).key}
    return staff


def _enrol(
    cohort: list[SyntheticPatient], progress: Progress, *, seed: int
) -> list[tuple[Patient, str]]:
    """Enrol through the enrolment service (pseudonyms, data keys, encrypted fields, the
    identity vault, medical groups), a thousand at a time, with synthetic identifiers."""
    progress.start("Enrolling patients", len(cohort))
    rng = np.random.default_rng([seed, 11])
    today = timezone.localdate()
    enrolled: list[tuple[Patient, str]] = []
    for start in range(0, len(cohort), ENROL_BATCH):
        chunk = cohort[start : start + ENROL_BATCH]
        created = enrolments_create(
            records=[
                Enrolment(
                    identifiers=synthetic_identifiers(seed, start + k),
                    date_of_birth=synthetic_birth(p.age_band, rng, today),
                    sex=p.sex,
                    timezone=p.timezone,
                    goals=p.goals,
                    conditions=p.conditions,
                    medications=p.medications,
                )
                for k, p in enumerate(chunk)
            ]
        )
        enrolled += [(e.patient, e.token) for e in created]
        progress.advance(len(chunk))
    return enrolled


def synthetic_identifiers(seed: int, index: int) -> dict[str, str]:
    """Invented identifiers in reserved ranges (example.org; UK drama numbers 07700 9xxxxx)."""
    return {
        "record_number": f"DEMO-{seed}-{index:07d}",
        "email": f"demo.patient.{seed}.{index}@example.org",
        "phone": f"+44 7700 9{index % 100000:05d}",
    }


AGE_RANGES = {"18-29": (18, 29), "30-44": (30, 44), "45-59": (45, 59), "60-74": (60, 74)}


def synthetic_birth(age_band: str, rng: np.random.Generator, today: dt.date) -> dt.date:
    """A date of birth whose age today falls in `age_band` (75+: up to 94)."""
    low, high = AGE_RANGES.get(age_band, (75, 94))
    age = int(rng.integers(low, high + 1))
    # Well inside the year of age, so leap days never move it across a band's edge.
    return today - dt.timedelta(days=int(age * 365.25) + int(rng.integers(10, 350)))


def _sim_cohort(cohort: list[SyntheticPatient]) -> simulator.Cohort:
    names = tuple(CONDITIONS)
    return simulator.Cohort(
        weights=np.array([[p.goals.get(g, 0.0) for g in simulator.GOALS] for p in cohort]),
        groups=np.array([[g in p.groups for g in names] for p in cohort], dtype=bool),
        group_names=names,
        age_band=np.array([simulator.AGE_BANDS.index(p.age_band) for p in cohort]),
        sex=np.array([simulator.SEXES.index(p.sex) for p in cohort]),
    )


def sim_catalogue(snapshot: Snapshot) -> simulator.Catalogue:
    return simulator.Catalogue.from_records(
        [
            {"slug": t.slug, "goal": t.goal, "category": t.category, "intensity": t.intensity}
            for t in snapshot.templates
        ]
    )


def _history(
    cohort: list[SyntheticPatient],
    enrolled: list[tuple[Patient, str]],
    *,
    seed: int,
    days: int,
    progress: Progress,
) -> dict[str, int]:
    snapshot = catalogue_snapshot()
    world = simulator.World.build(_sim_cohort(cohort), sim_catalogue(snapshot), seed=seed)
    # History honours the rules: blocked templates are never proposed, and neither are those
    # that need a review (the history holds no invented clinician decisions).
    tables = [snapshot.safety(frozenset(p.groups)) for p in cohort]
    allowed = np.array([t.actions <= Action.ALLOW_WITH_NOTE for t in tables])
    today = timezone.now().astimezone(dt.UTC).date()
    first_day = today - dt.timedelta(days=days)
    # Patients joined over the period, so the demo has long and short histories (and new
    # patients for the recommender's cold start).
    joined = np.random.default_rng([seed, 5]).integers(0, days, len(cohort))
    _backdate_enrolment(enrolled, first_day, joined)
    writer = _HistoryWriter(cohort, enrolled, snapshot, first_day, days, tables)
    policy = simulator.BaselinePolicy()
    progress.start("Simulating history (days)", days)

    def on_step(step: simulator.Step) -> None:
        writer.step(step, policy.last_scores)

    def on_day(day: int, measures: np.ndarray) -> None:
        writer.measures(day, measures)
        if day % FLUSH_DAYS == FLUSH_DAYS - 1 or day == days - 1:
            writer.flush()
        progress.advance()

    simulator.simulate(
        world,
        policy,
        days=days,
        seed=seed,
        start_weekday=first_day.weekday(),
        repeat_window_days=settings.NUDGE_REPEAT_WINDOW_DAYS,
        on_step=on_step,
        on_day=on_day,
        enrolment_day=joined,
        allowed=allowed,
    )
    return writer.counts


def _current_decisions(
    enrolled: list[tuple[Patient, str]], *, seed: int, progress: Progress
) -> None:
    """Live decisions now, through the decision service, for a sample of patients: the demo
    starts with nudges ready, held by quiet hours, and waiting in the review queue."""
    rng = np.random.default_rng([seed, 9])
    sample = rng.choice(len(enrolled), size=min(CURRENT_SAMPLE, len(enrolled)), replace=False)
    progress.start("Deciding for a sample now", len(sample))
    for index in sample:
        decision_make(patient=enrolled[index][0], rng=np.random.default_rng([seed, int(index)]))
        progress.advance()


def _backdate_enrolment(
    enrolled: list[tuple[Patient, str]], first_day: dt.date, joined: np.ndarray
) -> None:
    by_day: dict[int, list[Any]] = {}
    for (patient, _), day in zip(enrolled, joined, strict=True):
        by_day.setdefault(int(day), []).append(patient.pk)
    with transaction.atomic():
        for day, ids in by_day.items():
            when = dt.datetime.combine(first_day + dt.timedelta(days=day), dt.time(7), dt.UTC)
            Patient.objects.filter(pk__in=ids).update(created_at=when)


@dataclass(frozen=True)
class _Times:
    """A decision moment and the times derived from it, formatted once."""

    moment: dt.datetime
    stamp: str
    weekday: int
    expires: str
    opened: str
    closed: dict[str, str]


SLOT = Trigger.SLOT.value
PROPOSED = DeliveryState.PROPOSED.value


class _HistoryWriter:
    """Turns simulated steps into rows, written a day at a time in one transaction each. Hot:
    half a million decision points for the default cohort, so values are formatted once
    (moments per zone, day and slot; patient ids) and receipts go through orjson."""

    def __init__(
        self,
        cohort: list[SyntheticPatient],
        enrolled: list[tuple[Patient, str]],
        snapshot: Snapshot,
        first_day: dt.date,
        days: int,
        tables: list[SafetyTable],
    ) -> None:
        self.db = DbFormat()
        self.tables = tables
        self.cohort = cohort
        self.snapshot = snapshot
        self.first_day = first_day
        self.keys = [t.key for t in snapshot.templates]
        self.slugs = [t.slug for t in snapshot.templates]
        self.goals = [t.goal for t in snapshot.templates]
        self.versions = [t.version for t in snapshot.templates]
        self.template_ids = [self.db.id(t.id) for t in snapshot.templates]
        self.patient_ids = [self.db.id(p.pk) for p, _ in enrolled]
        zones = sorted({p.timezone for p in cohort})
        self.zone_of = np.array([zones.index(p.timezone) for p in cohort])
        # moments[zone][day][slot] = (aware UTC datetime, stored text)
        self.moments = [
            [
                [self._moment(ZoneInfo(z), d, s) for s in range(len(simulator.SLOT_HOURS))]
                for d in range(days)
            ]
            for z in zones
        ]
        self.zones = [ZoneInfo(z) for z in zones]
        self.agenda_goals = [list(p.goals) for p in cohort]
        self.groups = [list(p.groups) for p in cohort]
        self.whys: dict[tuple[int, str], str] = {}
        self.consent = {"personalisation": True, "notifications": True, "research": True}
        self.level = np.random.default_rng(len(cohort)).normal(0.0, 1.0, (len(cohort), 2))
        self.rows: dict[str, list[tuple]] = {k: [] for k in TABLES}
        self.counts = {"points": 0, "deliveries": 0, "events": 0}

    def _moment(self, zone: ZoneInfo, day: int, slot: int) -> "_Times":
        hours = simulator.SLOT_HOURS[slot]
        local = dt.datetime.combine(
            self.first_day + dt.timedelta(days=day),
            dt.time(int(hours), int(round((hours % 1) * 60))),
            tzinfo=zone,
        )
        moment = local.astimezone(dt.UTC)
        text = self.db.datetime
        expires = moment + dt.timedelta(hours=settings.NUDGE_EXPIRY_HOURS)
        return _Times(
            moment=moment,
            stamp=str(text(moment)),
            weekday=local.weekday(),
            expires=str(text(expires)),
            opened=str(text(moment + dt.timedelta(minutes=20))),
            closed={
                DeliveryState.DONE: str(text(moment + dt.timedelta(hours=2))),
                DeliveryState.DISMISSED: str(text(moment + dt.timedelta(minutes=30))),
                DeliveryState.EXPIRED: str(text(expires)),
            },
        )

    def _safety_columns(self, patient: int, action: int) -> tuple:
        verdict = self.tables[patient].verdicts[action]
        note = " ".join(verdict.notes)[:300] if verdict.action == Action.ALLOW_WITH_NOTE else ""
        return note, self.snapshot.ruleset_version, verdict.name, self.db.json(list(verdict.rules))

    def _why(self, patient: int, goal: str) -> str:
        key = (patient, goal)
        if key not in self.whys:
            self.whys[key] = explain(goal=goal, agenda=self.cohort[patient].goals)
        return self.whys[key]

    def step(self, step: simulator.Step, scores: np.ndarray) -> None:
        obs, m, db = step.obs, len(self.keys), self.db
        n = len(obs.rows)
        at = self.moments[0][obs.day][obs.slot].moment
        point_ids, decision_ids = db.new_ids(n, at), db.new_ids(n, at)
        nudged = np.flatnonzero(step.action < m)
        delivery_ids = dict(zip(nudged.tolist(), db.new_ids(len(nudged), at), strict=True))
        transition_ids = db.new_ids(len(nudged), at)
        on_agenda = obs.cohort.weights[obs.rows][:, obs.catalogue.goal] > 0
        local_hour = int(simulator.SLOT_HOURS[obs.slot])
        for k in range(n):
            i = int(obs.rows[k])
            times = self.moments[self.zone_of[i]][obs.day][obs.slot]
            action = int(step.action[k])
            columns = np.flatnonzero(obs.mask[k])
            repeated = np.flatnonzero(on_agenda[k] & ~obs.mask[k])
            probs = step.probabilities[k]
            chosen = self.keys[action] if action < m else None
            if chosen is not None:
                outcome, reason = Outcome.NUDGE.value, "chosen"
            elif columns.size:
                outcome, reason = Outcome.NO_NUDGE.value, "policy_chose_none"
            else:
                outcome, reason = Outcome.NOTHING_SUITABLE.value, "no_candidates"
            receipt = receipt_head(
                trigger="slot",
                local_hour=local_hour,
                weekday=times.weekday,
                client={},
                consent=self.consent,
                agenda=self.cohort[i].goals,
                groups=self.groups[i],
            )
            if repeated.size:
                receipt["excluded"] = {"repeat_window": [self.slugs[c] for c in repeated]}
            receipt_finish(
                receipt,
                keys=[self.keys[c] for c in columns],
                probabilities=probs[columns],
                no_nudge=float(probs[m]),
                draw=float(step.draws[k]),
                outcome=outcome,
                reason=reason,
                chosen=chosen,
                propensity=float(probs[action]),
                chosen_score=float(scores[k, action]) if chosen else None,
            )
            receipt["safety"] = safety_receipt(self.snapshot, self.tables[i], on_agenda[k], {})
            receipt["source"] = "simulated_history"
            stamp = times.stamp
            self.rows["points"].append(
                (point_ids[k], stamp, stamp, self.patient_ids[i], stamp, SLOT)
            )
            self.rows["decisions"].append(
                (
                    decision_ids[k],
                    stamp,
                    stamp,
                    point_ids[k],
                    self.patient_ids[i],
                    outcome,
                    reason,
                    baseline.POLICY_NAME,
                    baseline.POLICY_VERSION,
                    self.template_ids[action] if chosen else None,
                    self.versions[action] if chosen else None,
                    float(probs[action]),
                    "",  # arm: the history predates the experiment
                    "",  # model version: the baseline decided
                    db.json(receipt),
                )
            )
            if chosen is not None:
                if step.acted[k]:
                    state = DeliveryState.DONE
                elif step.dismissed[k]:
                    state = DeliveryState.DISMISSED
                else:
                    state = DeliveryState.EXPIRED
                closed = times.closed[state]
                delivery_id = delivery_ids[k]
                self.rows["deliveries"].append(
                    (
                        delivery_id,
                        stamp,
                        closed,
                        decision_ids[k],
                        self.patient_ids[i],
                        self.template_ids[action],
                        state.value,
                        self._why(i, self.goals[action]),
                        None,
                        times.expires,
                        stamp,
                        times.opened if step.opened[k] else None,
                        closed,
                        *self._safety_columns(i, action),
                    )
                )
                self.rows["transitions"].append(
                    (
                        transition_ids.pop(),
                        closed,
                        closed,
                        delivery_id,
                        PROPOSED,
                        state.value,
                        "seed",
                        "synthetic_history",
                    )
                )

    def measures(self, day: int, measured: np.ndarray) -> None:
        date = self.first_day + dt.timedelta(days=day)
        stamps = [
            self.db.datetime(dt.datetime.combine(date, dt.time(MEASURE_HOUR), tzinfo=z))
            for z in self.zones
        ]
        for goal, (kind, level, scale, decimals) in MEASURES.items():
            column = simulator.GOALS.index(goal)
            rows = [
                i
                for i in np.flatnonzero(~np.isnan(measured[:, column]))
                if goal in self.cohort[i].goals
            ]
            if goal == "diet":
                levels = level + 12.0 * self.level[rows, 0]
            elif goal == "monitoring":
                levels = level + 10.0 * self.level[rows, 1]
            else:
                levels = np.full(len(rows), level)
            values = np.round(levels + scale * measured[rows, column], decimals)
            if kind == "medication_taken":
                values = np.clip(values, 0.0, 1.0)
            ids = self.db.new_ids(len(rows), dt.datetime.combine(date, dt.time(), dt.UTC))
            client_id = f"seed-{day}-{goal}"
            for j, i in enumerate(rows):
                stamp = stamps[self.zone_of[i]]
                self.rows["events"].append(
                    (
                        ids[j],
                        stamp,
                        stamp,
                        self.patient_ids[i],
                        client_id,
                        kind,
                        float(values[j]),
                        stamp,
                    )
                )

    def flush(self) -> None:
        with transaction.atomic():
            for name, (model, fields) in TABLES.items():
                insert_rows(model, fields, self.rows[name])
        self.counts["points"] += len(self.rows["points"])
        self.counts["deliveries"] += len(self.rows["deliveries"])
        self.counts["events"] += len(self.rows["events"])
        for rows in self.rows.values():
            rows.clear()


_TIMES = list(columns.TIMES)
TABLES: dict[str, tuple[type, list[str]]] = {
    "points": (DecisionPoint, list(columns.POINT_COLUMNS)),
    "decisions": (Decision, list(columns.DECISION_COLUMNS)),
    "deliveries": (
        Delivery,
        [
            *_TIMES,
            "decision",
            "patient",
            "template",
            "state",
            "why",
            "due_at",
            "expires_at",
            "delivered_at",
            "opened_at",
            "closed_at",
            "note",
            "ruleset_version",
            "safety_action",
            "safety_rules",
        ],
    ),
    "transitions": (DeliveryTransition, list(columns.TRANSITION_COLUMNS)),
    "events": (Event, [*_TIMES, "patient", "client_id", "kind", "value", "occurred_at"]),
}


def _write_credentials(
    path: Path, enrolled: list[tuple[Patient, str]], staff: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "patients": [{"pseudonym": p.pseudonym, "token": token} for p, token in enrolled],
        **staff,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    tmp.chmod(0o600)
    tmp.replace(path)
