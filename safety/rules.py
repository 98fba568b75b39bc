"""Pure: contraindication rule evaluation, (patient's groups, template) -> verdict. No ORM.

Fails closed: unknown patient groups, no rule set, a rule that cannot be read or any exception
give "block" or "review", never "allow". Where rules disagree the strictest wins."""

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Action(IntEnum):
    """Ordered by strictness, so max() is "the strictest wins"."""

    ALLOW = 0
    ALLOW_WITH_NOTE = 1
    REVIEW = 2
    BLOCK = 3

    @property
    def label(self) -> str:
        return self.name.lower()


ACTIONS_BY_NAME = {action.label: action for action in Action}
SEVERITIES = ("low", "moderate", "high")
CATEGORIES = ("reminder", "tip", "challenge", "reflection", "tracking")
GOALS = ("activity", "medication", "sleep", "diet", "mood", "hydration", "monitoring")
INTENSITIES = ("low", "moderate", "high")


class TemplateFacts(Protocol):
    """What the rules read of a template (read-only, so frozen dataclasses satisfy it)."""

    @property
    def key(self) -> str: ...

    @property
    def tags(self) -> frozenset[str]: ...

    @property
    def category(self) -> str: ...

    @property
    def goal(self) -> str: ...

    @property
    def intensity(self) -> str: ...


@dataclass(frozen=True)
class RuleSpec:
    """One rule. An empty match list means "any" for that attribute; validate_rule makes sure
    at least one attribute is constrained."""

    code: str
    groups: frozenset[str]
    action: Action
    severity: str
    tags: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    goals: frozenset[str] = frozenset()
    intensities: frozenset[str] = frozenset()
    verified: bool = False
    note_to_patient: str = ""
    effective_from: dt.date = dt.date.min
    effective_to: dt.date | None = None

    def matches(self, template: TemplateFacts) -> bool:
        return (
            (not self.tags or bool(self.tags & template.tags))
            and (not self.categories or template.category in self.categories)
            and (not self.goals or template.goal in self.goals)
            and (not self.intensities or template.intensity in self.intensities)
        )

    @property
    def effective_action(self) -> Action:
        """An unverified rule never blocks silently: it sends to review instead."""
        if not self.verified and self.action == Action.BLOCK:
            return Action.REVIEW
        return self.action

    def in_force(self, day: dt.date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)


@dataclass(frozen=True)
class Verdict:
    action: Action
    rules: tuple[str, ...] = ()  # every rule that matched
    groups: tuple[str, ...] = ()  # the groups whose rules decided the action
    severity: str | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None

    @property
    def name(self) -> str:
        return self.action.label

    def as_receipt(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.name, "rules": list(self.rules)}
        if self.groups:
            out["groups"] = list(self.groups)
        if self.error:
            out["error"] = self.error
        return out


ALLOW = Verdict(Action.ALLOW)


@dataclass(frozen=True)
class CompiledRules:
    """The rules of one rule-set version in force on one day, indexed by group."""

    version: int
    day: dt.date
    by_group: Mapping[str, tuple[RuleSpec, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, version: int, rules: Iterable[RuleSpec], *, day: dt.date) -> "CompiledRules":
        index: dict[str, list[RuleSpec]] = {}
        for rule in rules:
            if rule.in_force(day):
                for group in rule.groups:
                    index.setdefault(group, []).append(rule)
        return cls(version=version, day=day, by_group={g: tuple(r) for g, r in index.items()})


def evaluate(
    *, groups: frozenset[str] | None, template: TemplateFacts, rules: CompiledRules | None
) -> Verdict:
    """The verdict for one template for a patient in `groups` (None: not known)."""
    if rules is None:
        return Verdict(Action.BLOCK, error="no_active_rule_set")
    if groups is None:
        return Verdict(Action.REVIEW, error="patient_groups_unknown")
    try:
        return _evaluate(groups, template, rules)
    except Exception as exc:  # fail closed, whatever went wrong; no health data in the log
        logger.error("rule evaluation failed (%s); candidate blocked", type(exc).__name__)
        return Verdict(Action.BLOCK, error="evaluation_error")


def _evaluate(groups: frozenset[str], template: TemplateFacts, rules: CompiledRules) -> Verdict:
    matched: dict[str, RuleSpec] = {}
    for group in groups:
        for rule in rules.by_group.get(group, ()):
            if rule.code not in matched and rule.matches(template):
                matched[rule.code] = rule
    if not matched:
        return ALLOW
    strictest = max(rule.effective_action for rule in matched.values())
    deciding = [r for r in matched.values() if r.effective_action == strictest]
    return Verdict(
        action=strictest,
        rules=tuple(sorted(matched)),
        groups=tuple(sorted({g for r in deciding for g in r.groups & groups})),
        severity=max((r.severity for r in deciding), key=SEVERITIES.index),
        notes=tuple(sorted({r.note_to_patient for r in matched.values() if r.note_to_patient})),
    )


def evaluate_all(
    *,
    groups: frozenset[str] | None,
    templates: Sequence[TemplateFacts],
    rules: CompiledRules | None,
) -> list[Verdict]:
    return [evaluate(groups=groups, template=t, rules=rules) for t in templates]


def rule_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """A rule of the catalogue file (safety/data/rules.json) as the fields of a rule: match
    lists, action, severity, texts, source, dates. A rule is verified only with a source."""
    match, source = record.get("match", {}), record.get("source") or {}
    return {
        "tags": sorted(match.get("tags", [])),
        "categories": sorted(match.get("categories", [])),
        "goals": sorted(match.get("goals", [])),
        "intensities": sorted(match.get("intensities", [])),
        "action": record.get("action", ""),
        "severity": record.get("severity", ""),
        "rationale": record.get("rationale", ""),
        "note_to_patient": record.get("note_to_patient", "") or "",
        "source_title": source.get("title", "") or "",
        "source_publisher": source.get("publisher", "") or "",
        "source_url": source.get("url", "") or "",
        "source_summary": source.get("summary", "") or "",
        "verified": bool(record.get("verified", False)) and bool(source.get("url")),
        "effective_from": _date(record.get("effective_from"), "effective_from"),
        "effective_to": _date(record.get("effective_to"), "effective_to"),
    }


class RuleFormatError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _date(value: Any, field: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise RuleFormatError(field, f"Not a date (YYYY-MM-DD): {str(value)[:20]!r}.") from None


def spec_from_fields(code: str, groups: Iterable[str], fields: Mapping[str, Any]) -> RuleSpec:
    return RuleSpec(
        code=code,
        groups=frozenset(groups),
        action=ACTIONS_BY_NAME[fields["action"]],
        severity=fields["severity"],
        tags=frozenset(fields["tags"]),
        categories=frozenset(fields["categories"]),
        goals=frozenset(fields["goals"]),
        intensities=frozenset(fields["intensities"]),
        verified=fields["verified"],
        note_to_patient=fields["note_to_patient"],
        effective_from=fields["effective_from"] or dt.date.min,
        effective_to=fields["effective_to"],
    )


def approval_covers(verdict_groups: tuple[str, ...], approved_groups: frozenset[str]) -> bool:
    """A review asked by the rules of these groups is covered when each has approved (a
    review with no group, when any clinician has; approvals record that group as "")."""
    return set(verdict_groups or ("",)) <= approved_groups


def validate_rule(
    *,
    groups: Iterable[str],
    known_groups: Iterable[str],
    tags: Iterable[str],
    categories: Iterable[str],
    goals: Iterable[str],
    intensities: Iterable[str],
    action: str,
    severity: str,
    note_to_patient: str,
    effective_from: dt.date | None,
    effective_to: dt.date | None,
    verified: bool = False,
    source_url: str = "",
) -> dict[str, str]:
    """What is wrong with a rule, field by field (empty when nothing is)."""
    errors: dict[str, str] = {}
    groups, tags = list(groups), list(tags)
    unknown = sorted(set(groups) - set(known_groups))
    if not groups:
        errors["groups"] = "A rule needs at least one medical group."
    elif unknown:
        errors["groups"] = f"Unknown medical group: {', '.join(unknown)}."
    for name, values, allowed in (
        ("categories", categories, CATEGORIES),
        ("goals", goals, GOALS),
        ("intensities", intensities, INTENSITIES),
    ):
        bad = sorted(set(values) - set(allowed))
        if bad:
            errors[name] = (
                f"Unknown {name[:-1] if name != 'categories' else 'category'}: {', '.join(bad)}."
            )
    if any(not isinstance(t, str) or not t.strip() for t in tags):
        errors["tags"] = "Tags must be non-empty strings."
    if not (tags or list(categories) or list(goals) or list(intensities)):
        errors["match"] = (
            "A rule must match on at least one of tags, categories, goals, intensities."
        )
    if action not in {"block", "review", "allow_with_note"}:
        errors["action"] = "The action must be block, review or allow_with_note."
    if severity not in SEVERITIES:
        errors["severity"] = "The severity must be high, moderate or low."
    if action == "allow_with_note" and not note_to_patient.strip():
        errors["note_to_patient"] = "A rule that allows with a note needs the note."
    if verified and not source_url.strip():
        errors["verified"] = "Only a rule whose source was read (give its URL) is verified."
    if effective_from is None:
        errors["effective_from"] = "A rule needs the date it takes effect."
    elif effective_to is not None and effective_to <= effective_from:
        errors["effective_to"] = "The end date must be after the start date."
    return errors
