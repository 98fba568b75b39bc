"""The catalogue, decision points, decision receipts, deliveries, the push outbox and
patient events."""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from core.models import BaseModel
from patients.models import Goal


class Category(models.TextChoices):
    REMINDER = "reminder"
    TIP = "tip"
    CHALLENGE = "challenge"
    REFLECTION = "reflection"
    TRACKING = "tracking"


class Intensity(models.TextChoices):
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


class TemplateStatus(models.TextChoices):
    PENDING = "pending", "Awaiting a clinician's sign-off"
    ACTIVE = "active", "Signed off, in use"
    STOPPED = "stopped", "Stopped (emergency stop)"
    RETIRED = "retired", "Superseded by a newer version"


class Template(BaseModel):
    """One version of a nudge. An edit makes a new version; slug + version is unique. A
    version is used only once a clinician has signed it off (status active); signing off a
    version retires the older ones, and a stop takes the version out of use at once."""

    slug = models.SlugField(max_length=64)
    version = models.PositiveIntegerField(default=1)
    title = models.CharField(max_length=120)
    body = models.TextField(max_length=1000)
    goal = models.CharField(max_length=16, choices=Goal.choices)
    category = models.CharField(max_length=16, choices=Category.choices)
    intensity = models.CharField(max_length=16, choices=Intensity.choices)
    tags = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=10, choices=TemplateStatus.choices, default=TemplateStatus.PENDING
    )
    signed_off_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    stopped_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["slug", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["slug", "version"], name="template_unique_version"),
            models.UniqueConstraint(
                fields=["slug"],
                condition=models.Q(status="active"),
                name="template_one_active_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.slug} v{self.version}"


class TemplatePopularity(BaseModel):
    """Nightly aggregate: how often a template was acted on, within one medical group (or all
    patients when group is null). Input to the baseline policy."""

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="popularity")
    group = models.ForeignKey(
        "safety.MedicalGroup", null=True, blank=True, on_delete=models.CASCADE
    )
    delivered = models.PositiveIntegerField(default=0)
    acted = models.PositiveIntegerField(default=0)
    rate = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["template", "group"],
                name="popularity_unique_in_group",
                condition=models.Q(group__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["template"],
                name="popularity_unique_overall",
                condition=models.Q(group__isnull=True),
            ),
        ]


class Trigger(models.TextChoices):
    SLOT = "slot", "Scheduled slot"
    APP_OPEN = "app_open", "App opened"
    EVENT = "event", "Incoming event"


class DecisionPoint(BaseModel):
    """One moment at which the engine may nudge one patient; decided at most once."""

    patient = models.ForeignKey(  # indexed by decision_point_unique, which leads with it
        "patients.Patient", on_delete=models.CASCADE, related_name="decision_points", db_index=False
    )
    moment = models.DateTimeField()
    trigger = models.CharField(max_length=16, choices=Trigger.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "moment"], name="decision_point_unique")
        ]


class Outcome(models.TextChoices):
    NUDGE = "nudge", "A nudge was chosen"
    NO_NUDGE = "no_nudge", "The policy chose not to nudge"
    NOT_AVAILABLE = "not_available", "The patient was not available"
    NOTHING_SUITABLE = "nothing_suitable", "No suitable nudge"


class Decision(BaseModel):
    """The receipt of one decision: what was known, what could be chosen, with which
    probabilities, the draw, and what was chosen or why nothing was."""

    decision_point = models.OneToOneField(
        DecisionPoint, on_delete=models.CASCADE, related_name="decision"
    )
    patient = models.ForeignKey(  # indexed by (patient, created_at) below
        "patients.Patient", on_delete=models.CASCADE, related_name="decisions", db_index=False
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    reason = models.CharField(max_length=40)
    policy_name = models.CharField(max_length=40)
    policy_version = models.CharField(max_length=40)
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.PROTECT)
    template_version = models.PositiveIntegerField(null=True, blank=True)
    propensity = models.FloatField(null=True, blank=True)
    arm = models.CharField(max_length=12, blank=True)
    model_version = models.CharField(max_length=60, blank=True)
    receipt = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["patient", "created_at"])]


class DeliveryState(models.TextChoices):
    PROPOSED = "proposed"
    AWAITING_REVIEW = "awaiting_review"
    HELD = "held"
    READY = "ready"
    DELIVERED = "delivered"
    OPENED = "opened"
    DONE = "done"
    DISMISSED = "dismissed"
    SNOOZED = "snoozed"
    EXPIRED = "expired"
    BLOCKED = "blocked"


class Delivery(BaseModel):
    """A chosen nudge on its way to the patient. Its state changes only through
    nudges.lifecycle, which refuses illegal transitions."""

    decision = models.OneToOneField(Decision, on_delete=models.CASCADE, related_name="delivery")
    patient = models.ForeignKey(  # indexed by (patient, state) below
        "patients.Patient", on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="deliveries")
    state = models.CharField(
        max_length=20, choices=DeliveryState.choices, default=DeliveryState.PROPOSED
    )
    why = models.CharField(max_length=300)
    note = models.CharField(max_length=300, blank=True, help_text="A safety note to the patient.")
    ruleset_version = models.PositiveIntegerField(null=True, blank=True)
    safety_action = models.CharField(max_length=16, blank=True)
    safety_rules = models.JSONField(default=list, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["patient", "state"]),
            models.Index(fields=["state", "due_at"]),
            models.Index(fields=["patient", "created_at"]),
        ]


class ReviewKind(models.TextChoices):
    BEFORE_DELIVERY = "before_delivery", "Needs approval before delivery"
    PATIENT_FEEDBACK = "patient_feedback", "Patient said: not right for me"


class ReviewState(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ACKNOWLEDGED = "acknowledged"
    WITHDRAWN = "withdrawn"


class ReviewRequest(BaseModel):
    """A delivery waiting for clinicians (before_delivery: rules of the patient's groups asked
    for review), or a patient's report that a nudge is not right for them. Every group in
    `groups` needs a decision from a clinician who covers it (clinicians.ReviewDecision). The
    matched rules are copied in, so the request reads the same after the rules change."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="reviews")
    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="review_requests"
    )
    kind = models.CharField(max_length=20, choices=ReviewKind.choices)
    state = models.CharField(
        max_length=14, choices=ReviewState.choices, default=ReviewState.PENDING
    )
    groups = models.ManyToManyField("safety.MedicalGroup", related_name="review_requests")
    severity = models.CharField(max_length=10, blank=True)
    rules = models.JSONField(default=list, blank=True)
    ruleset_version = models.PositiveIntegerField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "created_at"]),
            models.Index(fields=["state", "deadline"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "kind"],
                condition=models.Q(state="pending"),
                name="review_one_pending_per_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} (item {str(self.pk)[:8]})"


class TemplateDecline(BaseModel):
    """The patient said a nudge is not right for them: that template (every version) is not
    proposed to them again."""

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.CASCADE, related_name="template_declines"
    )
    slug = models.SlugField(max_length=64)
    delivery = models.ForeignKey(Delivery, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "slug"], name="decline_unique_template")
        ]


class DeliveryTransition(BaseModel):
    """Append-only log of every state change, with who or what caused it."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20, choices=DeliveryState.choices)
    to_state = models.CharField(max_length=20, choices=DeliveryState.choices)
    actor = models.CharField(max_length=40)
    reason = models.CharField(max_length=60, blank=True)

    class Meta:
        ordering = ["created_at"]


class PushState(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"


class PushMessage(BaseModel):
    """Outbox row: one push notification per delivery, sent by the dispatcher with retries.
    The payload names no health data: the app fetches the nudge over the authenticated API."""

    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="push")
    state = models.CharField(max_length=12, choices=PushState.choices, default=PushState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.CharField(max_length=60, blank=True)
    provider = models.CharField(max_length=60, blank=True)
    provider_message_id = models.CharField(max_length=120, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "next_attempt_at"])]


class DevelopmentPush(BaseModel):
    """What the development provider would have sent to a phone."""

    message = models.ForeignKey(PushMessage, on_delete=models.CASCADE)
    payload = models.JSONField()


class EventKind(models.TextChoices):
    STEPS = "steps"
    ACTIVE_MINUTES = "active_minutes"
    SLEEP_HOURS = "sleep_hours"
    MOOD_SCORE = "mood_score"
    WATER_ML = "water_ml"
    MEDICATION_TAKEN = "medication_taken"
    GLUCOSE_MMOL = "glucose_mmol"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    WEIGHT_KG = "weight_kg"
    APP_OPEN = "app_open"


class Event(BaseModel):
    """A behaviour or health measurement from the app. client_id makes a resent batch a no-op."""

    patient = models.ForeignKey(  # indexed by event_unique_client_id, which leads with it
        "patients.Patient", on_delete=models.CASCADE, related_name="events", db_index=False
    )
    client_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=24, choices=EventKind.choices)
    value = models.FloatField()
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "client_id"], name="event_unique_client_id")
        ]
        indexes = [models.Index(fields=["patient", "kind", "occurred_at"])]


class IdempotencyRecord(BaseModel):
    """The first response to a write sent with an Idempotency-Key, replayed on repeats."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField(encoder=DjangoJSONEncoder)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_key")
        ]


class ModelStatus(models.TextChoices):
    CANDIDATE = "candidate", "Trained, not promoted"
    CHAMPION = "champion", "Serving"
    RETIRED = "retired", "Served before"
    REJECTED = "rejected", "Did not beat the champion"


class ModelVersion(BaseModel):
    """The model registry: every trained recommender, its artefact file and hash, feature
    schema, training window and metrics. Exactly one version is the champion; the baseline
    policy is the first one (kind baseline, no artefact)."""

    version = models.CharField(max_length=60, unique=True)
    kind = models.CharField(max_length=12)  # baseline, agenda
    status = models.CharField(max_length=10, choices=ModelStatus.choices)
    artefact = models.CharField(max_length=300, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    schema = models.JSONField(null=True, blank=True)
    trained_from = models.DateTimeField(null=True, blank=True)
    trained_to = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="champion"),
                name="model_one_champion",
            )
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.status})"


class ImportedDecision(BaseModel):
    """One decision point of an imported decision log (docs/decision-log.md): a data set
    from outside the engine, for training and offline evaluation. The patient is known only
    by a keyed pseudonym in the data set's namespace; actions are the log's own opaque ids,
    which the catalogue need not know. All rows of one import share imported_at."""

    dataset = models.SlugField(max_length=64)
    pseudonym = models.CharField(max_length=64)
    time = models.DateTimeField()
    available = models.JSONField(default=list)
    context = models.JSONField(default=dict)
    action = models.CharField(max_length=200, blank=True, help_text="Blank: no nudge.")
    propensity = models.FloatField()
    distribution = models.JSONField(null=True, blank=True)
    outcome = models.JSONField(default=dict)
    true_values = models.JSONField(null=True, blank=True)
    imported_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "pseudonym", "time"], name="imported_decision_unique"
            )
        ]
        indexes = [models.Index(fields=["dataset", "time"], name="imported_decision_time")]


class BatchRun(BaseModel):
    """One slot decided for every patient (generate_decisions): each patient's decision point
    is that slot's local time on `day` in their time zone. Patients are split into chunks by
    primary-key ranges fixed when the run is planned; each chunk is a Celery task that any
    worker may run, and running one twice creates nothing twice."""

    slot = models.TimeField()
    day = models.DateField()
    chunk_size = models.PositiveIntegerField()
    chunks = models.JSONField(default=list)  # [[first patient pk, last patient pk], ...]
    patients = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]


class BatchChunk(BaseModel):
    """A chunk of a batch run that has been decided (once: unique per run and index)."""

    run = models.ForeignKey(BatchRun, on_delete=models.CASCADE, related_name="done")
    index = models.PositiveIntegerField()
    decisions = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="batch_chunk_once")]
