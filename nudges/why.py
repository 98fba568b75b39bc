"""Pure: the plain-language "why am I seeing this" for a patient."""

from collections.abc import Mapping

from nudges.models import Template
from patients.models import Goal


def _priority(weight: float) -> str:
    if weight >= 0.67:
        return "a top priority"
    if weight >= 0.34:
        return "a priority"
    return "part of"


def explain(*, template: Template, agenda: Mapping[str, float]) -> str:
    goal = Goal(template.goal).label.lower()
    weight = agenda.get(template.goal, 0.0)
    lead = (
        f"{goal.capitalize()} is {_priority(weight)} in your care plan"
        if weight >= 0.34
        else f"This is part of your care plan's goal on {goal}"
    )
    return f"{lead}, and people with a care plan like yours often find this suggestion helpful."
