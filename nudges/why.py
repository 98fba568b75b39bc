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


CATEGORY_NAMES = {
    "reminder": "reminders",
    "tip": "tips",
    "challenge": "challenges",
    "reflection": "reflections",
    "tracking": "tracking suggestions",
}


def _reason(feature: str, category: str) -> str | None:
    """A plain phrase for a feature that pushed the model towards this nudge (None for one
    that says nothing a patient would recognise, or that names their diagnosis)."""
    if feature in ("local_hour", "weekday", "weekend"):
        return "this time of day and week tends to suit you"
    if feature == "category_act_rate_14d":
        return f"you have been acting on {CATEGORY_NAMES.get(category, 'suggestions')} lately"
    if feature in ("template_acted_14d",):
        return "you did this recently"
    if feature in ("days_since_template", "template_sent_7d"):
        return "you have not had this one for a while"
    if feature in ("acts_7d", "act_rate_14d", "nudges_3d"):
        return "you have been keeping up with your nudges"
    if feature in ("template", "category", "intensity"):
        return "it is the kind of suggestion you tend to act on"
    if feature.startswith("g_") or feature in ("age_band", "sex", "tenure_days"):
        return "people with a care plan like yours often act on it"
    return None


def explain_model(
    *, goal: str, category: str, agenda: Mapping[str, float], contributions: list[tuple[str, float]]
) -> str:
    """The patient's "why" for a nudge the model chose: the goal's place in their care plan,
    and the strongest reason among the features that pushed the model towards it. It never
    names a medical group."""
    name = GOAL_NAMES.get(goal, goal)
    weight = agenda.get(goal, 0.0)
    lead = (
        f"{name[0].upper()}{name[1:]} is {_priority(weight)} in your care plan"
        if weight >= 0.34
        else f"This is part of your care plan's goal on {name}"
    )
    for feature, value in contributions:
        if value <= 0 or feature.startswith("w_") or feature == "goal_weight" or feature == "goal":
            continue
        reason = _reason(feature, category)
        if reason:
            return f"{lead}, and {reason}."
    return f"{lead}."
