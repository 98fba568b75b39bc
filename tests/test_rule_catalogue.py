"""The shipped contraindication catalogue (safety/data/rules.json, described in
docs/safety-rules.md) and its loading (safety.services.ruleset_load_file): the first load is
the active rule set, a changed file becomes a draft, a malformed file is refused whole, and
the domain's known contraindications hold for the active rules."""

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from core.errors import ApplicationError
from core.models import CacheStamp
from nudges.models import Template, TemplateStatus
from nudges.services.catalogue import TEMPLATES_FILE, template_facts
from safety.models import MedicalGroup, Rule, RuleRevision, RuleSet, RuleSetStatus
from safety.rules import Action, evaluate
from safety.selectors import active_rule_set, compiled_rules, rule_specs
from safety.services import GROUPS_FILE, RULES_FILE, RULES_STAMP, ruleset_load_file

pytestmark = pytest.mark.django_db

TEMPLATES_FILE_RECORDS = json.loads(TEMPLATES_FILE.read_text())
CATALOGUE = json.loads(RULES_FILE.read_text())


def active_rules():
    return compiled_rules(active_rule_set(), day=timezone.now().date())


def verdict_for(group: str, slug: str):
    template = Template.objects.get(slug=slug, status=TemplateStatus.ACTIVE)
    facts = template_facts(template)
    return evaluate(groups=frozenset({group}), template=facts, rules=active_rules())


def rules_stamp() -> int | None:
    return CacheStamp.objects.filter(name=RULES_STAMP).values_list("version", flat=True).first()


# Loading -----------------------------------------------------------------------------------


def test_the_first_load_of_the_shipped_file_becomes_the_active_rule_set():
    RuleSet.objects.all().delete()
    stamp_before = rules_stamp()

    loaded = ruleset_load_file()

    assert loaded is not None
    assert loaded.status == RuleSetStatus.ACTIVE
    assert loaded.activated_at is not None
    assert loaded.source_file_sha256 == hashlib.sha256(RULES_FILE.read_bytes()).hexdigest()
    assert sorted(loaded.rules.values_list("code", flat=True)) == sorted(
        r["id"] for r in CATALOGUE["rules"]
    )
    assert active_rule_set() == loaded
    assert rules_stamp() != stamp_before  # cached decisions pick the rules up


def test_every_rule_of_the_file_is_loaded_with_its_groups_action_and_severity():
    active = active_rule_set()
    assert active is not None

    stored = {
        rule.code: (sorted(g.slug for g in rule.groups.all()), rule.action, rule.severity)
        for rule in active.rules.prefetch_related("groups")
    }

    assert stored == {
        r["id"]: (sorted(r["groups"]), r["action"], r["severity"]) for r in CATALOGUE["rules"]
    }


def test_loading_the_same_file_again_does_nothing():
    sets_before = list(RuleSet.objects.values_list("pk", "status"))
    stamp_before = rules_stamp()

    loaded = ruleset_load_file()

    assert loaded is None
    assert list(RuleSet.objects.values_list("pk", "status")) == sets_before
    assert rules_stamp() == stamp_before


def write_catalogue(tmp_path: Path, catalogue: dict[str, Any]) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(catalogue, indent=2))
    return path


def test_a_changed_file_becomes_a_new_draft_and_the_active_set_stays_in_force(tmp_path):
    changed = copy.deepcopy(CATALOGUE)
    [cold] = [r for r in changed["rules"] if r["id"] == "HF-COLD-01"]
    cold["severity"] = "high"
    active_before = active_rule_set()
    assert active_before is not None
    stamp_before = rules_stamp()

    draft = ruleset_load_file(path=write_catalogue(tmp_path, changed))

    assert draft is not None
    assert draft.status == RuleSetStatus.DRAFT
    assert draft.version > active_before.version
    assert draft.activated_at is None
    assert draft.rules.get(code="HF-COLD-01").severity == "high"
    assert active_rule_set() == active_before
    assert active_before.rules.get(code="HF-COLD-01").severity == "moderate"
    assert rules_stamp() == stamp_before


def _unknown_group(rule):
    rule["groups"] = ["heart-failure", "no-such-group"]


def _empty_match(rule):
    rule["match"] = {"tags": [], "categories": [], "goals": [], "intensities": []}


def _end_before_start(rule):
    rule["effective_from"] = "2026-01-01"
    rule["effective_to"] = "2025-06-30"


@pytest.mark.parametrize(
    ("spoil", "field"),
    [(_unknown_group, "groups"), (_empty_match, "match"), (_end_before_start, "effective_to")],
    ids=["unknown-group", "empty-match", "end-before-start"],
)
def test_a_file_with_a_malformed_rule_is_refused_naming_the_rule_and_field_and_nothing_is_written(
    tmp_path, spoil, field
):
    spoiled = copy.deepcopy(CATALOGUE)
    # The last rule, so the rules before it would have been written had the load not been
    # all or nothing.
    spoil(spoiled["rules"][-1])
    code = spoiled["rules"][-1]["id"]
    counts = (RuleSet.objects.count(), Rule.objects.count(), RuleRevision.objects.count())

    with pytest.raises(ApplicationError) as refused:
        ruleset_load_file(path=write_catalogue(tmp_path, spoiled))

    assert code in refused.value.message
    assert field in refused.value.fields
    assert (RuleSet.objects.count(), Rule.objects.count(), RuleRevision.objects.count()) == counts


def test_a_file_with_a_duplicate_rule_id_is_refused_naming_the_rule_and_nothing_is_written(
    tmp_path,
):
    spoiled = copy.deepcopy(CATALOGUE)
    duplicate = copy.deepcopy(spoiled["rules"][0])
    duplicate["severity"] = "low"
    spoiled["rules"].append(duplicate)
    counts = (RuleSet.objects.count(), Rule.objects.count(), RuleRevision.objects.count())

    with pytest.raises(ApplicationError) as refused:
        ruleset_load_file(path=write_catalogue(tmp_path, spoiled))

    assert "id" in refused.value.fields
    assert (RuleSet.objects.count(), Rule.objects.count(), RuleRevision.objects.count()) == counts
    # Which rule is the duplicate is what the person fixing the file needs to know.
    assert duplicate["id"] in refused.value.message


# The catalogue's coverage ------------------------------------------------------------------


def test_every_demo_medical_group_has_at_least_two_rules():
    groups = [g["slug"] for g in json.loads(GROUPS_FILE.read_text())]
    active = active_rule_set()
    assert active is not None

    counts = {slug: active.rules.filter(groups__slug=slug).count() for slug in groups}

    assert {slug: n for slug, n in counts.items() if n < 2} == {}
    assert set(groups) == set(MedicalGroup.objects.values_list("slug", flat=True))


def test_every_rule_matches_at_least_one_shipped_template():
    templates = [
        Template(
            slug=r["slug"],
            version=r["version"],
            goal=r["goal"],
            category=r["category"],
            intensity=r["intensity"],
            tags=r["tags"],
        )
        for r in TEMPLATES_FILE_RECORDS
    ]
    facts = [template_facts(t) for t in templates]
    active = active_rule_set()
    assert active is not None

    unmatched = [
        spec.code for spec in rule_specs(active) if not any(spec.matches(f) for f in facts)
    ]

    assert unmatched == []


def test_every_verified_rule_cites_a_source_url_and_summary():
    for record in CATALOGUE["rules"]:
        if record.get("verified"):
            source = record.get("source") or {}
            assert source.get("url", "").startswith(("http://", "https://")), record["id"]
            assert source.get("summary", "").strip(), record["id"]
    stored = Rule.objects.filter(rule_set=active_rule_set(), verified=True)
    assert stored.exists()
    assert not stored.filter(source_url="").exists()
    assert not stored.filter(source_summary="").exists()


def test_a_rule_without_a_source_url_is_stored_unverified_even_if_the_file_says_verified(tmp_path):
    changed = copy.deepcopy(CATALOGUE)
    [rule] = [r for r in changed["rules"] if r["id"] == "HF-COLD-01"]
    rule["source"] = None
    assert rule["verified"] is True

    draft = ruleset_load_file(path=write_catalogue(tmp_path, changed))

    assert draft is not None
    assert draft.rules.get(code="HF-COLD-01").verified is False


# Known contraindications hold for the active rules -----------------------------------------

INCREASE_FLUIDS = sorted(
    r["slug"] for r in TEMPLATES_FILE_RECORDS if "increase-fluids" in r["tags"]
)


def test_the_shipped_templates_include_increase_fluids_nudges():
    assert len(INCREASE_FLUIDS) >= 1


@pytest.mark.parametrize("slug", INCREASE_FLUIDS)
def test_heart_failure_blocks_every_increase_fluids_nudge(slug):
    verdict = verdict_for("heart-failure", slug)

    assert verdict.action == Action.BLOCK
    assert "HF-FLUIDS-01" in verdict.rules
    assert verdict.groups == ("heart-failure",)


@pytest.mark.parametrize(
    ("group", "slug", "rule"),
    [
        ("insulin-treated", "intermittent-fasting", "INS-FASTING-01"),
        ("insulin-treated", "skip-evening-snack", "INS-SKIPMEAL-01"),
        ("eating-disorder", "calorie-log", "ED-CALORIE-01"),
        ("eating-disorder", "weight-loss-goal", "ED-WEIGHTLOSS-01"),
        ("pregnancy", "hot-yoga-class", "PREG-HOTYOGA-01"),
        ("pregnancy", "five-a-side", "PREG-CONTACT-01"),
        ("pregnancy", "floor-core-routine", "PREG-SUPINE-01"),
    ],
)
def test_a_known_contraindication_is_blocked(group, slug, rule):
    verdict = verdict_for(group, slug)

    assert verdict.action == Action.BLOCK
    assert rule in verdict.rules
    assert verdict.severity in ("moderate", "high")


def test_an_unverified_block_rule_of_the_catalogue_only_sends_to_review():
    preg_fasting = Rule.objects.get(rule_set=active_rule_set(), code="PREG-FASTING-01")
    assert (preg_fasting.action, preg_fasting.verified) == ("block", False)

    verdict = verdict_for("pregnancy", "intermittent-fasting")

    assert verdict.action == Action.REVIEW
    assert verdict.rules == ("PREG-FASTING-01",)
    assert verdict.groups == ("pregnancy",)


def test_an_everyday_nudge_is_allowed_for_every_group():
    for group in MedicalGroup.objects.values_list("slug", flat=True):
        assert verdict_for(group, "walk-10-minutes").action == Action.ALLOW, group
