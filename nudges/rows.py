"""Column lists of the rows that bulk writers (batch decisions, demo seeding, benchmarks) insert
with core.bulk.insert_rows, kept in one place so that a new column on these models is added
once. Pure: names only."""

TIMES = ("id", "created_at", "updated_at")
POINT_COLUMNS = (*TIMES, "patient", "moment", "trigger")
DECISION_COLUMNS = (
    *TIMES,
    "decision_point",
    "patient",
    "outcome",
    "reason",
    "policy_name",
    "policy_version",
    "template",
    "template_version",
    "propensity",
    "arm",
    "model_version",
    "receipt",
)
DELIVERY_COLUMNS = (
    *TIMES,
    "decision",
    "patient",
    "template",
    "state",
    "why",
    "note",
    "ruleset_version",
    "safety_action",
    "safety_rules",
    "due_at",
    "expires_at",
)
TRANSITION_COLUMNS = (*TIMES, "delivery", "from_state", "to_state", "actor", "reason")
PUSH_COLUMNS = (
    *TIMES,
    "delivery",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "provider",
    "provider_message_id",
)
