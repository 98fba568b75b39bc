"""Pure: the plain-language "why am I seeing this" for a patient."""

from collections.abc import Mapping

GOAL_NAMES = {
    "activity": "physical activity",
    "medication": "taking your medicines as prescribed",
    "sleep": "sleep",
    "diet": "diet",
    "mood": "mood and stress",
    "hydration": "hydration",
    "monitoring": "keeping track of your readings",
}


def _priority(weight: float) -> str:
    if weight >= 0.67:
        return "a top priority"
    return "a priority"


def explain(*, goal: str, agenda: Mapping[str, float]) -> str:
    name = GOAL_NAMES.get(goal, goal)
    weight = agenda.get(goal, 0.0)
    lead = (
        f"{name[0].upper()}{name[1:]} is {_priority(weight)} in your care plan"
        if weight >= 0.34
        else f"This is part of your care plan's goal on {name}"
    )
    return f"{lead}, and people with a care plan like yours often find this suggestion helpful."
