"""Shapes of the patient API. Input serializers only parse and validate; services decide."""

import datetime as dt
import math

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from nudges import lifecycle
from nudges.models import Decision, Delivery, DeliveryState, EventKind, Trigger
from patients.models import Patient

MAX_CONTEXT_KEYS = 20


class NudgeSerializer(serializers.ModelSerializer):
    title = serializers.CharField(source="template.title")
    body = serializers.CharField(source="template.body")
    goal = serializers.CharField(source="template.goal")
    category = serializers.CharField(source="template.category")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "title",
            "body",
            "goal",
            "category",
            "state",
            "why",
            "note",
            "created_at",
            "due_at",
            "expires_at",
        ]


class DecisionRequestSerializer(serializers.Serializer):
    trigger = serializers.ChoiceField(
        choices=[Trigger.APP_OPEN, Trigger.EVENT], default=Trigger.APP_OPEN
    )
    # The metaclass takes declared fields off the class: Serializer.context is still the context.
    context = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]

    def validate_context(self, value: dict) -> dict:
        if len(value) > MAX_CONTEXT_KEYS:
            raise serializers.ValidationError(f"At most {MAX_CONTEXT_KEYS} context entries.")
        for key, item in value.items():
            if len(key) > 40:
                raise serializers.ValidationError("Context names are at most 40 characters.")
            if isinstance(item, bool) or not isinstance(item, int | float | str):
                raise serializers.ValidationError(
                    f"Context '{key[:40]}' must be a number or a string."
                )
            if isinstance(item, str) and len(item) > 64:
                raise serializers.ValidationError(
                    f"Context '{key[:40]}' is longer than 64 characters."
                )
            if isinstance(item, float) and not math.isfinite(item):
                raise serializers.ValidationError(f"Context '{key[:40]}' must be finite.")
        return value


class DecisionSerializer(serializers.ModelSerializer):
    decision_id = serializers.UUIDField(source="id")
    moment = serializers.DateTimeField(source="decision_point.moment")
    trigger = serializers.CharField(source="decision_point.trigger")
    nudge = serializers.SerializerMethodField()
    message = serializers.SerializerMethodField()

    class Meta:
        model = Decision
        fields = [
            "decision_id",
            "moment",
            "trigger",
            "outcome",
            "reason",
            "message",
            "nudge",
            "policy_name",
            "policy_version",
            "propensity",
            "receipt",
        ]

    def get_nudge(self, decision: Decision) -> dict | None:
        """The nudge, once it may be shown: not while it waits for a clinician or for the end
        of the patient's quiet hours."""
        delivery = self._delivery(decision)
        if delivery is None or delivery.state not in lifecycle.VISIBLE:
            return None
        return NudgeSerializer(delivery).data

    def get_message(self, decision: Decision) -> str:
        delivery = self._delivery(decision)
        if delivery is not None and delivery.state in STATE_MESSAGES:
            return STATE_MESSAGES[delivery.state]
        return REASON_MESSAGES.get(decision.reason, decision.reason)

    @staticmethod
    def _delivery(decision: Decision) -> Delivery | None:
        return getattr(decision, "delivery", None) if decision.template_id else None


STATE_MESSAGES: dict[str, str] = {  # by Delivery.state, a plain str once read
    DeliveryState.AWAITING_REVIEW: "A clinician will look at this suggestion before you get it.",
    DeliveryState.HELD: "You will get this suggestion when your quiet hours end.",
    DeliveryState.BLOCKED: "This suggestion was withdrawn.",
}

REASON_MESSAGES = {
    "chosen": "Here is a suggestion for you.",
    "policy_chose_none": "No suggestion right now.",
    "no_candidates": "Nothing suitable right now for the goals in your care plan.",
    "inactive": "Nudges are switched off for this account.",
    "snoozed": "You have snoozed nudges.",
    "daily_cap": "You have had today's nudges.",
    "recently_nudged": "You had a nudge a short while ago.",
}


class FeedbackSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=["opened", "done", "dismissed", "snoozed", "not_for_me"],
        help_text="not_for_me: this nudge is not right for me (stops it, tells my clinicians).",
    )
    until = serializers.DateTimeField(required=False)


class EventSerializer(serializers.Serializer):
    client_id = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=EventKind.choices)
    value = serializers.FloatField()
    occurred_at = serializers.DateTimeField()

    def validate_value(self, value: float) -> float:
        if not math.isfinite(value) or abs(value) > 1e7:
            raise serializers.ValidationError("Must be a finite number of plausible size.")
        return value

    def validate_occurred_at(self, value: dt.datetime) -> dt.datetime:
        now = timezone.now()
        if value > now + dt.timedelta(minutes=10):
            raise serializers.ValidationError("Cannot be in the future.")
        if value < now - dt.timedelta(days=366):
            raise serializers.ValidationError("Older than a year.")
        return value


class EventBatchSerializer(serializers.Serializer):
    events = EventSerializer(many=True, allow_empty=False)

    def validate_events(self, value: list[dict]) -> list[dict]:
        limit = settings.NUDGE_EVENTS_MAX_BATCH
        if len(value) > limit:
            raise serializers.ValidationError(f"At most {limit} events per batch.")
        ids = [event["client_id"] for event in value]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("A client_id appears twice in this batch.")
        return value


class EventBatchResultSerializer(serializers.Serializer):
    stored = serializers.IntegerField()
    duplicates = serializers.IntegerField()


class MeSerializer(serializers.ModelSerializer):
    medical_groups = serializers.SerializerMethodField()
    goals = serializers.SerializerMethodField()

    class Meta:
        model = Patient
        fields = [
            "pseudonym",
            "age_band",
            "sex",
            "medical_groups",
            "goals",
            "timezone",
            "quiet_start",
            "quiet_end",
            "snoozed_until",
        ]
        read_only_fields = ["pseudonym", "age_band", "sex"]

    def get_medical_groups(self, patient: Patient) -> list[dict]:
        return [
            {"slug": m.group.slug, "name": m.group.name}
            for m in patient.group_memberships.select_related("group").order_by("group__slug")
        ]

    def get_goals(self, patient: Patient) -> list[dict]:
        return [{"goal": g.goal, "weight": g.weight} for g in patient.goals.all()]


class MeUpdateSerializer(serializers.Serializer):
    timezone = serializers.CharField(required=False, max_length=64)
    quiet_start = serializers.TimeField(required=False)
    quiet_end = serializers.TimeField(required=False)
    snoozed_until = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "This field cannot be changed here." for name in sorted(unknown)}
            )
        if not attrs:
            raise serializers.ValidationError("Nothing to change.")
        return attrs
