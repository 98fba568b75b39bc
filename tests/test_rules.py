"""Pure contraindication rule evaluation (safety/rules.py): the strictest rule wins, an
unverified block only asks for review, rules apply only while in force, and evaluation fails
closed (no rule set, unknown groups, any exception). Rules are built by hand here, so these
tests do not depend on the shipped catalogue."""

import datetime as dt
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nudges.decide import TemplateInfo
from safety.rules import (
    Action,
    CompiledRules,
    RuleSpec,
    evaluate,
    validate_rule,
)

DAY = dt.date(2026, 6, 1)


def template(
    *,
    tags: tuple[str, ...] = (),
    category: str = "challenge",
    goal: str = "activity",
    intensity: str = "high",
    slug: str = "some-template",
) -> TemplateInfo:
    return TemplateInfo(
        id=1,
        slug=slug,
        version=1,
        goal=goal,
        category=category,
        intensity=intensity,
        tags=frozenset(tags),
    )


def rule(
    code: str,
    *groups: str,
    action: Action = Action.BLOCK,
    severity: str = "moderate",
    tags: tuple[str, ...] = (),
    verified: bool = True,
    **extra,
) -> RuleSpec:
    return RuleSpec(
        code=code,
        groups=frozenset(groups),
        action=action,
        severity=severity,
        tags=frozenset(tags),
        verified=verified,
        **extra,
    )


def compiled(*rules: RuleSpec, day: dt.date = DAY) -> CompiledRules:
    return CompiledRules.build(1, rules, day=day)


# The strictest rule wins -------------------------------------------------------------------


def test_the_strictest_rule_wins_across_the_patients_groups():
    rules = compiled(
        rule("HTN-1", "hypertension", action=Action.REVIEW, tags=("vigorous",)),
        rule("HF-1", "heart-failure", action=Action.BLOCK, tags=("vigorous",)),
        rule(
            "T2D-1",
            "diabetes",
            action=Action.ALLOW_WITH_NOTE,
            tags=("vigorous",),
            note_to_patient="Check.",
        ),
    )

    verdict = evaluate(
        groups=frozenset({"hypertension", "heart-failure", "diabetes"}),
        template=template(tags=("vigorous",)),
        rules=rules,
    )

    assert verdict.action == Action.BLOCK


def test_the_verdict_lists_every_matched_rule_the_deciding_groups_and_their_highest_severity():
    rules = compiled(
        rule("A-REVIEW", "group-a", action=Action.REVIEW, severity="high", tags=("t",)),
        rule("B-BLOCK", "group-b", action=Action.BLOCK, severity="low", tags=("t",)),
        rule("C-BLOCK", "group-c", action=Action.BLOCK, severity="moderate", tags=("t",)),
        rule("D-OTHER", "group-a", action=Action.BLOCK, severity="high", tags=("other",)),
    )

    verdict = evaluate(
        groups=frozenset({"group-a", "group-b", "group-c"}),
        template=template(tags=("t",)),
        rules=rules,
    )

    assert verdict.action == Action.BLOCK
    assert verdict.rules == ("A-REVIEW", "B-BLOCK", "C-BLOCK")
    # Only the groups whose rules decided the block, not group-a whose rule only reviews.
    assert verdict.groups == ("group-b", "group-c")
    # The highest severity among the deciding rules; A-REVIEW's "high" did not decide.
    assert verdict.severity == "moderate"


def test_a_rule_shared_by_several_groups_is_listed_once_and_names_only_the_patients_groups():
    shared = rule("SHARED-1", "group-a", "group-b", "group-z", action=Action.REVIEW, tags=("t",))

    verdict = evaluate(
        groups=frozenset({"group-a", "group-b"}),
        template=template(tags=("t",)),
        rules=compiled(shared),
    )

    assert verdict.rules == ("SHARED-1",)
    assert verdict.groups == ("group-a", "group-b")


def test_the_notes_of_every_matched_rule_reach_the_verdict():
    rules = compiled(
        rule(
            "N-1", "g", action=Action.ALLOW_WITH_NOTE, tags=("t",), note_to_patient="Check glucose."
        ),
        rule(
            "N-2", "g", action=Action.ALLOW_WITH_NOTE, tags=("t",), note_to_patient="Carry a snack."
        ),
    )

    verdict = evaluate(groups=frozenset({"g"}), template=template(tags=("t",)), rules=rules)

    assert verdict.action == Action.ALLOW_WITH_NOTE
    assert verdict.notes == ("Carry a snack.", "Check glucose.")


def test_a_template_no_rule_matches_is_allowed():
    rules = compiled(rule("HF-1", "heart-failure", tags=("increase-fluids",)))

    verdict = evaluate(
        groups=frozenset({"heart-failure"}), template=template(tags=("walking",)), rules=rules
    )

    assert verdict.action == Action.ALLOW
    assert verdict.rules == ()


def test_a_rule_of_a_group_the_patient_is_not_in_does_not_apply():
    rules = compiled(rule("HF-1", "heart-failure", tags=("increase-fluids",)))

    verdict = evaluate(
        groups=frozenset({"hypertension"}),
        template=template(tags=("increase-fluids",)),
        rules=rules,
    )

    assert verdict.action == Action.ALLOW


# Unverified rules --------------------------------------------------------------------------


def test_an_unverified_block_rule_asks_for_review_instead_of_blocking():
    rules = compiled(rule("PREG-X", "pregnancy", tags=("fasting",), verified=False))

    verdict = evaluate(
        groups=frozenset({"pregnancy"}), template=template(tags=("fasting",)), rules=rules
    )

    assert verdict.action == Action.REVIEW
    assert verdict.rules == ("PREG-X",)
    assert verdict.groups == ("pregnancy",)


def test_an_unverified_block_loses_to_a_verified_block():
    rules = compiled(
        rule("UNVERIFIED", "g", tags=("t",), verified=False, severity="high"),
        rule("VERIFIED", "g", tags=("t",), verified=True, severity="low"),
    )

    verdict = evaluate(groups=frozenset({"g"}), template=template(tags=("t",)), rules=rules)

    assert verdict.action == Action.BLOCK
    assert verdict.severity == "low"


# Effective dates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effective_from", "effective_to", "applies"),
    [
        (dt.date(2026, 1, 1), None, True),
        (DAY, None, True),
        (DAY + dt.timedelta(days=1), None, False),
        (dt.date(2026, 1, 1), DAY + dt.timedelta(days=1), True),
        (dt.date(2026, 1, 1), DAY, False),  # the end date is exclusive
        (dt.date(2025, 1, 1), dt.date(2025, 12, 31), False),
    ],
)
def test_a_rule_applies_only_within_its_effective_dates(effective_from, effective_to, applies):
    dated = rule(
        "DATED-1",
        "g",
        tags=("t",),
        effective_from=effective_from,
        effective_to=effective_to,
    )

    verdict = evaluate(
        groups=frozenset({"g"}), template=template(tags=("t",)), rules=compiled(dated)
    )

    assert verdict.action == (Action.BLOCK if applies else Action.ALLOW)


# Matching ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "category", "goal", "intensity", "matches"),
    [
        (("running",), "challenge", "activity", "high", True),  # one of the tags is enough
        (("hot-yoga", "walking"), "challenge", "activity", "high", True),
        (("walking",), "challenge", "activity", "high", False),  # none of the tags
        (("running",), "tip", "activity", "high", False),  # category not listed
        (("running",), "challenge", "sleep", "high", False),  # goal not listed
        (("running",), "challenge", "activity", "low", False),  # intensity not listed
        (("running",), "reminder", "activity", "moderate", True),
    ],
)
def test_tags_match_any_of_while_category_goal_and_intensity_must_each_match(
    tags, category, goal, intensity, matches
):
    constrained = rule(
        "MATCH-1",
        "g",
        tags=("running", "hot-yoga"),
        categories=frozenset({"challenge", "reminder"}),
        goals=frozenset({"activity"}),
        intensities=frozenset({"moderate", "high"}),
    )
    candidate = template(tags=tags, category=category, goal=goal, intensity=intensity)

    verdict = evaluate(groups=frozenset({"g"}), template=candidate, rules=compiled(constrained))

    assert (verdict.action == Action.BLOCK) is matches


def test_a_rule_without_tags_matches_on_its_other_attributes_alone():
    by_goal = rule("GOAL-1", "g", goals=frozenset({"hydration"}))

    hit = evaluate(
        groups=frozenset({"g"}), template=template(goal="hydration"), rules=compiled(by_goal)
    )
    miss = evaluate(
        groups=frozenset({"g"}), template=template(goal="sleep"), rules=compiled(by_goal)
    )

    assert hit.action == Action.BLOCK
    assert miss.action == Action.ALLOW


# Failing closed ----------------------------------------------------------------------------


def test_without_a_rule_set_every_template_is_blocked():
    verdict = evaluate(groups=frozenset(), template=template(tags=("walking",)), rules=None)

    assert verdict.action == Action.BLOCK
    assert verdict.error == "no_active_rule_set"


def test_a_patient_whose_groups_are_unknown_gets_a_review_even_where_no_rule_matches():
    verdict = evaluate(groups=None, template=template(tags=("walking",)), rules=compiled())

    assert verdict.action == Action.REVIEW
    assert verdict.error == "patient_groups_unknown"


class ExplodingTemplate:
    """A template whose tags cannot be read; the error message carries health data, which
    must not reach the log."""

    key = "exploding@1"
    category = "challenge"
    goal = "diet"
    intensity = "high"

    @property
    def tags(self):
        raise RuntimeError("patient test-00042 with F50.00 eating-disorder")


def test_an_error_during_evaluation_blocks_and_logs_only_the_exception_type(caplog):
    rules = compiled(rule("ED-1", "eating-disorder", action=Action.REVIEW, tags=("fasting",)))

    with caplog.at_level(logging.DEBUG, logger="safety.rules"):
        verdict = evaluate(
            groups=frozenset({"eating-disorder"}), template=ExplodingTemplate(), rules=rules
        )

    assert verdict.action == Action.BLOCK
    assert verdict.error == "evaluation_error"
    [record] = [r for r in caplog.records if r.name == "safety.rules"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "rule evaluation failed (RuntimeError); candidate blocked"
    assert record.exc_info is None  # no traceback, which would carry the message
    for secret in ("F50.00", "eating-disorder", "test-00042", "fasting"):
        assert secret not in caplog.text


# validate_rule -----------------------------------------------------------------------------

VALID_RULE: dict[str, Any] = {
    "groups": ["heart-failure"],
    "known_groups": ["heart-failure", "hypertension"],
    "tags": ["increase-fluids"],
    "categories": [],
    "goals": [],
    "intensities": [],
    "action": "block",
    "severity": "high",
    "note_to_patient": "",
    "effective_from": dt.date(2026, 1, 1),
    "effective_to": None,
}


def test_a_well_formed_rule_has_no_errors():
    assert validate_rule(**VALID_RULE) == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"groups": ["no-such-group"]}, "groups"),
        ({"groups": []}, "groups"),
        ({"tags": [], "categories": [], "goals": [], "intensities": []}, "match"),
        ({"categories": ["lecture"]}, "categories"),
        ({"goals": ["wealth"]}, "goals"),
        ({"intensities": ["extreme"]}, "intensities"),
        ({"tags": ["  "]}, "tags"),
        ({"action": "allow"}, "action"),
        ({"action": "forbid"}, "action"),
        ({"severity": "critical"}, "severity"),
        ({"action": "allow_with_note", "note_to_patient": "  "}, "note_to_patient"),
        ({"effective_from": None}, "effective_from"),
        ({"effective_to": dt.date(2026, 1, 1)}, "effective_to"),
        ({"effective_to": dt.date(2025, 12, 31)}, "effective_to"),
    ],
)
def test_validate_rule_names_the_field_that_is_wrong(change, field):
    errors = validate_rule(**{**VALID_RULE, **change})

    assert set(errors) == {field}
    assert errors[field]


def test_validate_rule_names_the_unknown_group():
    errors = validate_rule(**{**VALID_RULE, "groups": ["heart-failure", "no-such-group"]})

    assert "no-such-group" in errors["groups"]


def test_an_allow_with_note_rule_with_its_note_is_valid():
    errors = validate_rule(
        **{**VALID_RULE, "action": "allow_with_note", "note_to_patient": "Check your glucose."}
    )

    assert errors == {}


# Property: the strictest matching rule decides ----------------------------------------------

GROUPS = ("g1", "g2", "g3")
TAGS = ("t1", "t2", "t3", "t4")
CATEGORIES = ("reminder", "tip", "challenge")
GOALS = ("activity", "diet", "sleep")
INTENSITIES = ("low", "moderate", "high")
RULE_ACTIONS = (Action.ALLOW_WITH_NOTE, Action.REVIEW, Action.BLOCK)


def subset(values: tuple[str, ...], *, min_size: int = 0):
    return st.frozensets(st.sampled_from(values), min_size=min_size)


@st.composite
def rule_specs(draw, code: str) -> RuleSpec:
    start = draw(st.dates(dt.date(2026, 5, 1), dt.date(2026, 7, 1)))
    end = draw(st.none() | st.dates(start + dt.timedelta(days=1), dt.date(2026, 8, 1)))
    return RuleSpec(
        code=code,
        groups=draw(subset(GROUPS, min_size=1)),
        action=draw(st.sampled_from(RULE_ACTIONS)),
        severity=draw(st.sampled_from(("low", "moderate", "high"))),
        tags=draw(subset(TAGS)),
        categories=draw(subset(CATEGORIES)),
        goals=draw(subset(GOALS)),
        intensities=draw(subset(INTENSITIES)),
        verified=draw(st.booleans()),
        effective_from=start,
        effective_to=end,
    )


@st.composite
def rule_sets(draw) -> list[RuleSpec]:
    size = draw(st.integers(min_value=0, max_value=8))
    return [draw(rule_specs(f"R-{i}")) for i in range(size)]


templates = st.builds(
    template,
    tags=st.lists(st.sampled_from(TAGS), max_size=3).map(tuple),
    category=st.sampled_from(CATEGORIES),
    goal=st.sampled_from(GOALS),
    intensity=st.sampled_from(INTENSITIES),
)


def applies(spec: RuleSpec, groups: frozenset[str], facts: TemplateInfo) -> bool:
    """The documented reading of a rule (docs/safety-rules.md), written out independently."""
    in_force = spec.effective_from <= DAY and (spec.effective_to is None or spec.effective_to > DAY)
    return (
        bool(spec.groups & groups)
        and in_force
        and (not spec.tags or bool(spec.tags & facts.tags))
        and (not spec.categories or facts.category in spec.categories)
        and (not spec.goals or facts.goal in spec.goals)
        and (not spec.intensities or facts.intensity in spec.intensities)
    )


def effective(spec: RuleSpec) -> Action:
    return Action.REVIEW if spec.action == Action.BLOCK and not spec.verified else spec.action


# The autouse catalogue fixture is function-scoped but irrelevant to pure evaluation.
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=rule_sets(), groups=subset(GROUPS), facts=templates)
def test_the_verdict_is_the_strictest_effective_action_of_the_matching_rules(specs, groups, facts):
    matching = [s for s in specs if applies(s, groups, facts)]

    verdict = evaluate(groups=groups, template=facts, rules=compiled(*specs))

    assert verdict.action == max((effective(s) for s in matching), default=Action.ALLOW)
    assert set(verdict.rules) == {s.code for s in matching}
    if any(s.action == Action.BLOCK for s in matching):
        assert verdict.action != Action.ALLOW
        assert verdict.action >= Action.REVIEW
