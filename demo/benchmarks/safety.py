"""Safety benchmarks: rule evaluation per candidate, the review queue's list page with 10,000
pending items, and a long run of decisions checked for blocked deliveries."""

import datetime as dt
import json
import time
from typing import Any

import numpy as np
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Count
from django.test import Client
from django.utils import timezone

from core.bulk import DbFormat, insert_rows
from demo.benchmarks.timing import summary_ms, timed
from demo.cohort import synthetic_cohort
from demo.seeding import Progress
from nudges import rows as columns
from nudges.decide import Snapshot, TemplateInfo
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    ReviewKind,
    ReviewRequest,
    Template,
)
from safety.models import MedicalGroup
from safety.rules import CompiledRules, evaluate, rule_fields, spec_from_fields
from safety.services import RULES_FILE


def _catalogue() -> tuple[CompiledRules, list[TemplateInfo]]:
    from nudges.services.catalogue import TEMPLATES_FILE

    records = json.loads(RULES_FILE.read_text())["rules"]
    specs = [spec_from_fields(r["id"], r["groups"], rule_fields(r)) for r in records]
    rules = CompiledRules.build(1, specs, day=timezone.now().date())
    templates = [
        TemplateInfo(
            id=i,
            slug=t["slug"],
            version=t["version"],
            goal=t["goal"],
            category=t["category"],
            intensity=t["intensity"],
            tags=frozenset(t["tags"]),
        )
        for i, t in enumerate(json.loads(TEMPLATES_FILE.read_text()))
    ]
    return rules, templates


def bench_rules(*, quick: bool = False) -> dict[str, Any]:
    """Microseconds per candidate: evaluate() on (patient groups, template) pairs of a
    synthetic cohort, and the amortised cost inside decisions, where verdicts are computed
    once per set of groups and kept by the catalogue snapshot."""
    rules, templates = _catalogue()
    cohort = synthetic_cohort(300 if quick else 3000, seed=1)
    pairs = [(frozenset(p.groups), t) for p in cohort for t in templates if t.goal in p.goals]
    start = time.perf_counter()
    for groups, template in pairs:
        evaluate(groups=groups, template=template, rules=rules)
    uncached = (time.perf_counter() - start) / len(pairs)
    snapshot = Snapshot(
        templates=tuple(templates),
        popularity_overall=np.zeros(len(templates)),
        popularity_by_group={},
        rules=rules,
    )
    start = time.perf_counter()
    for patient in cohort:
        snapshot.safety(frozenset(patient.groups)).actions  # noqa: B018
    cached = (time.perf_counter() - start) / len(pairs)
    return {
        "candidates": len(pairs),
        "rules": sum(len(r) for r in rules.by_group.values()),
        "evaluate_us_per_candidate": round(uncached * 1e6, 3),
        "in_decisions_us_per_candidate": round(cached * 1e6, 3),
        "distinct_group_sets": len({frozenset(p.groups) for p in cohort}),
    }


def bench_queue(*, quick: bool = False) -> dict[str, Any]:
    """The review queue's list page for a clinician with 10,000 pending items in their groups
    (1,000 with --quick), rendered through the admin as the browser gets it: the default
    page, a filtered page, and the page with filter counts (facets)."""
    setup_catalogue()
    items = 1_000 if quick else 10_000
    clinician = _clinician("bench-clinician", ["heart-failure", "hypertension"])
    patients = _patients(500, conditions=["I50.9", "I10"])
    _pending_reviews(patients, items, groups=["heart-failure", "hypertension"])
    client = Client()
    client.force_login(clinician)
    url = "/admin/clinicians/reviewqueueitem/"
    first = client.get(url)
    assert first.status_code == 200, first.status_code
    figures: dict[str, Any] = {"pending_items": items}
    for name, query in (
        ("list_page", ""),
        ("filtered_page", "?group=heart-failure&severity=high&waiting=over_24h"),
        ("page_with_counts", "?_facets=1"),
    ):
        # mypy cannot type a lambda with a default argument against timed's Callable[[], Any].
        samples = timed(lambda q=query: client.get(url + q), repeat=5 if quick else 20)  # type: ignore[misc]
        figures[name] = summary_ms(samples)
    return figures


def setup_catalogue() -> None:
    """Groups, the shipped rule set and the signed-off catalogue, in an empty database."""
    from nudges.models import TemplateStatus
    from nudges.services.catalogue import templates_load, templates_signoff
    from safety.services import medical_groups_load, ruleset_load_file

    medical_groups_load()
    ruleset_load_file()
    templates_load()
    signer = _clinician("bench-signer", [])
    templates_signoff(
        templates=list(Template.objects.filter(status=TemplateStatus.PENDING)), by=signer
    )


def _clinician(username: str, groups: list[str]) -> Any:
    from django.contrib.auth import get_user_model

    from clinicians.access import clinician_groups_set
    from clinicians.roles import CLINICIAN

    user = get_user_model().objects.create(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name=CLINICIAN))
    clinician_groups_set(user=user, groups=MedicalGroup.objects.filter(slug__in=groups))
    return user


def _patients(n: int, *, conditions: list[str]) -> list[Any]:
    from patients.services import NewPatient, patients_create
    from safety.services import patients_groups_refresh

    with transaction.atomic():
        created = patients_create(
            records=[
                NewPatient(
                    pseudonym=f"bench-{i:06d}",
                    age_band="60-74",
                    sex="female",
                    goals={"activity": 0.7, "hydration": 0.5},
                    conditions=conditions,
                )
                for i in range(n)
            ]
        )
        patients_groups_refresh(patient_ids=[p.pk for p, _ in created])
    return [p for p, _ in created]


def _pending_reviews(patients: list[Any], n: int, *, groups: list[str]) -> None:
    """n deliveries awaiting review with their requests, written as rows; created over the
    last three days so the waiting filter has something to do."""
    db = DbFormat()
    template = Template.objects.filter(status="active").order_by("slug").first()
    assert template is not None
    group_ids = [
        db.id(pk)
        for pk in MedicalGroup.objects.filter(slug__in=groups).values_list("pk", flat=True)
    ]
    now = timezone.now()
    rows: dict[str, list[tuple]] = {
        "points": [],
        "decisions": [],
        "deliveries": [],
        "reviews": [],
        "links": [],
    }
    ids = {k: db.new_ids(n) for k in ("points", "decisions", "deliveries", "reviews")}
    for i in range(n):
        patient = db.id(patients[i % len(patients)].pk)
        created = db.datetime(now - dt.timedelta(minutes=(i * 37) % (3 * 24 * 60)))
        moment = db.datetime(now - dt.timedelta(days=30, minutes=i))
        rows["points"].append((ids["points"][i], created, created, patient, moment, "app_open"))
        rows["decisions"].append(
            (
                ids["decisions"][i],
                created,
                created,
                ids["points"][i],
                patient,
                "nudge",
                "chosen",
                "baseline",
                "baseline-1",
                db.id(template.pk),
                template.version,
                0.1,
                "",
                "",
                db.json({}),
            )
        )
        rows["deliveries"].append(
            (
                ids["deliveries"][i],
                created,
                created,
                ids["decisions"][i],
                patient,
                db.id(template.pk),
                DeliveryState.AWAITING_REVIEW.value,
                "bench",
                db.datetime(now + dt.timedelta(days=2)),
                "",
                "review",
                db.json(["BENCH-01"]),
            )
        )
        rows["reviews"].append(
            (
                ids["reviews"][i],
                created,
                created,
                ids["deliveries"][i],
                patient,
                ReviewKind.BEFORE_DELIVERY.value,
                "pending",
                ("high", "moderate", "low")[i % 3],
                db.json([{"code": "BENCH-01", "action": "review", "rationale": "bench"}]),
                1,
            )
        )
        rows["links"].append((ids["reviews"][i], group_ids[i % len(group_ids)]))
    times = columns.TIMES
    with transaction.atomic():
        insert_rows(DecisionPoint, list(columns.POINT_COLUMNS), rows["points"])
        insert_rows(Decision, list(columns.DECISION_COLUMNS), rows["decisions"])
        insert_rows(
            Delivery,
            [
                *times,
                "decision",
                "patient",
                "template",
                "state",
                "why",
                "expires_at",
                "note",
                "safety_action",
                "safety_rules",
            ],
            rows["deliveries"],
        )
        insert_rows(
            ReviewRequest,
            [
                *times,
                "delivery",
                "patient",
                "kind",
                "state",
                "severity",
                "rules",
                "ruleset_version",
            ],
            rows["reviews"],
        )
        insert_rows(ReviewRequest.groups.through, ["reviewrequest", "medicalgroup"], rows["links"])


def bench_safety_run(*, quick: bool = False) -> dict[str, Any]:
    """Decisions through the decision service (the one behind POST /api/v1/decisions/) for a
    demo cohort over many days, with held nudges released, pushes sent and inboxes fetched as
    they go, a new rule set activated and a template stopped half-way; then every nudge that
    reached a patient is checked against the rules active, and the template's status, at the
    moment it reached them. 100,000 decisions (5,000 with --quick)."""
    from django.test.utils import override_settings

    from demo.progress import Bar
    from demo.seeding import demo_seed
    from nudges.services.registry import model_promote
    from nudges.services.training import model_train

    target = 5_000 if quick else 100_000
    patients = 500 if quick else 2_000
    days = 30  # two weeks gave too few measured health changes to train the effect model on
    scratch = _scratch()
    # A month of simulated history to train the first model on: the run then decides with
    # the agenda policy and its exploration, as the demo does.
    bar = Bar()
    try:
        demo_seed(
            patients=patients, seed=11, days=days, credentials_path=scratch / "c.json", progress=bar
        )
        with override_settings(NUDGE_MODELS_DIR=scratch / "models", NUDGE_ARMS="treatment:100"):
            trained = model_train(days=days, promote=False)
            model_promote(version=trained.row.version)
            figures = run_decisions(target=target, seed=11, progress=bar)
    finally:
        bar.close()
    figures["model"] = f"{trained.row.version} (promoted for the run; arms treatment:100)"
    return figures


def _scratch():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="bench-"))


def run_decisions(*, target: int, seed: int, progress: Progress | None = None) -> dict[str, Any]:
    """Decide at two slots a day for every patient until `target` decisions, moving time
    forward, with the delivery machinery running between slots; a rule change and an
    emergency stop land part-way. After every slot each nudge that newly reached a patient
    (delivered or later) is checked against the rules active then. Returns the figures;
    `violations` must be 0."""
    from clinicians.governance import ruleset_activate, ruleset_submit
    from nudges.selectors import current_nudges
    from nudges.services.catalogue import template_stop
    from nudges.services.decisions import decision_make
    from nudges.services.deliveries import (
        deliveries_expire,
        deliveries_mark_delivered,
        deliveries_release_held,
    )
    from nudges.services.outbox import outbox_dispatch
    from patients.models import Patient

    rng = np.random.default_rng(seed)
    patients = list(Patient.objects.order_by("pk"))
    # From the next minute: a decision made earlier this minute (the seeding's sample) would
    # otherwise be returned for its patient's first slot instead of a new one.
    start = (timezone.now() + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    slots = max(1, target // len(patients))
    seen: set[Any] = set()
    counts: dict[str, Any] = {
        "decisions": 0,
        "reached_patient": 0,
        "violations": 0,
        "blocked_in_receipts": 0,
    }
    progress = progress or Progress()
    progress.start("Deciding, slot by slot", slots * len(patients))
    began = time.perf_counter()
    for slot in range(slots):
        moment = start + dt.timedelta(hours=12 * slot)
        if slot == slots // 3:
            _tighten_rules(ruleset_submit, ruleset_activate)
        if slot == 2 * slots // 3:
            stopped = (
                Template.objects.filter(status="active", goal="activity").order_by("slug").first()
            )
            assert stopped is not None  # the shipped catalogue has active activity templates
            template_stop(template=stopped, by=_staff("bench-stopper"), reason="benchmark stop")
        for patient in patients:
            decision, _ = decision_make(
                patient=patient,
                trigger="slot",
                moment=moment,
                now=moment,
                rng=np.random.default_rng([seed, slot, counts["decisions"]]),
            )
            counts["decisions"] += 1
            progress.advance()
            counts["blocked_in_receipts"] += len(
                decision.receipt.get("safety", {}).get("block", {})
            )
        deliveries_release_held(now=moment + dt.timedelta(hours=1), limit=100_000)
        outbox_dispatch(now=moment + dt.timedelta(hours=1), limit=100_000)
        for index in rng.choice(len(patients), size=len(patients) // 5, replace=False):
            shown = list(current_nudges(patients[index], now=moment + dt.timedelta(hours=2)))
            deliveries_mark_delivered(deliveries=shown, actor="inbox")
        deliveries_expire(now=moment + dt.timedelta(hours=11))
        newly, violations = _check_reached(seen)
        counts["reached_patient"] += newly
        counts["violations"] += violations
    elapsed = time.perf_counter() - began
    counts["seconds"] = round(elapsed, 1)
    counts["decisions_per_second"] = round(counts["decisions"] / elapsed, 1)
    counts["policies"] = dict(
        Decision.objects.filter(created_at__gte=start, decision_point__trigger="slot")
        .values_list("policy_name")
        .annotate(n=Count("pk"))
        .values_list("policy_name", "n")
    )
    return counts


REACHED = [DeliveryState.DELIVERED, DeliveryState.OPENED, DeliveryState.DONE, DeliveryState.SNOOZED]


def _check_reached(seen: set[Any]) -> tuple[int, int]:
    """Deliveries that reached their patient since the last call, and how many of them the
    rules active now block or the template's stop forbids."""
    from nudges.services.catalogue import template_facts
    from safety.models import GroupMembership
    from safety.rules import Action
    from safety.selectors import active_rule_set, compiled_rules

    fresh = list(
        Delivery.objects.filter(
            delivered_at__isnull=False, state__in=REACHED + [DeliveryState.DISMISSED]
        )
        .exclude(pk__in=seen)
        .select_related("template")
    )
    rules = compiled_rules(active_rule_set(), day=timezone.now().date())
    groups: dict[Any, set[str]] = {}
    for pid, slug in GroupMembership.objects.filter(
        patient_id__in={d.patient_id for d in fresh}
    ).values_list("patient_id", "group__slug"):
        groups.setdefault(pid, set()).add(slug)
    violations = 0
    for delivery in fresh:
        seen.add(delivery.pk)
        verdict = evaluate(
            groups=frozenset(groups.get(delivery.patient_id, ())),
            template=template_facts(delivery.template),
            rules=rules,
        )
        if verdict.action == Action.BLOCK or delivery.template.status == "stopped":
            violations += 1
    return len(fresh), violations


def _staff(username: str, role: str = "clinician") -> Any:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name=role))
    return user


def _tighten_rules(submit: Any, activate: Any) -> None:
    """A second rule set that also blocks walking nudges for hypertension, written by one
    safety lead and signed off by another."""
    from safety.services import rule_save, ruleset_draft_create

    author, signer = _staff("bench-lead-1", "safety-lead"), _staff("bench-lead-2", "safety-lead")
    draft = ruleset_draft_create(by=author)
    rule_save(
        rule_set=draft,
        code="BENCH-WALK-01",
        groups=["hypertension"],
        fields={
            "tags": ["walking"],
            "categories": [],
            "goals": [],
            "intensities": [],
            "action": "block",
            "severity": "high",
            "rationale": "Benchmark rule: exercises a rule change mid-run.",
            "note_to_patient": "",
            "source_title": "benchmark",
            "source_publisher": "",
            "source_url": "https://example.org/benchmark",
            "source_summary": "Not a clinical rule.",
            "verified": True,
            "effective_from": timezone.now().date() - dt.timedelta(days=1),
            "effective_to": None,
        },
        by=author,
    )
    submit(rule_set=draft, by=author)
    activate(rule_set=draft, by=signer)
