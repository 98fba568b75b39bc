"""factory_boy factories. Patients are created through the patient service, as in the app."""

import itertools

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token

from clinicians.access import clinician_groups_set
from clinicians.roles import CLINICIAN, SAFETY_LEAD
from patients.services import NewPatient, patients_create
from safety.models import MedicalGroup
from safety.services import patients_groups_refresh

_counter = itertools.count(1)

# Conditions that put a patient in each demo group (ICD-10-CM).
GROUP_CODES = {
    "heart-failure": "I50.9",
    "hypertension": "I10",
    "type-2-diabetes": "E11.9",
    "insulin-treated": "E10.9",
    "copd": "J44.9",
    "pregnancy": "Z34.90",
    "chronic-kidney-disease": "N18.30",
    "depression": "F32.9",
    "eating-disorder": "F50.00",
}


def make_patient(
    *,
    goals: dict[str, float] | None = None,
    groups: tuple[str, ...] = (),
    timezone: str = "UTC",
    age_band: str = "45-59",
    sex: str = "female",
    consents: dict[str, bool] | None = None,
    quiet: tuple | None = None,
):
    """A patient created through patients_create, with the conditions that put them in
    `groups`; returns (patient, token). Quiet hours are off unless `quiet` = (start, end)."""
    record = NewPatient(
        pseudonym=f"test-{next(_counter):05d}",
        age_band=age_band,
        sex=sex,
        goals=goals or {"activity": 0.8, "sleep": 0.4},
        timezone=timezone,
        conditions=[GROUP_CODES[g] for g in groups],
        consents=consents or {},
    )
    [(patient, token)] = patients_create(records=[record])
    patients_groups_refresh(patient_ids=[patient.pk])
    patient.refresh_from_db()
    if quiet is None:
        import datetime as dt

        quiet = (dt.time(0, 0), dt.time(0, 0))  # start == end: no quiet hours
    patient.quiet_start, patient.quiet_end = quiet
    patient.save(update_fields=["quiet_start", "quiet_end"])
    return patient, token


def _save_when_created(user: User, create: bool, extracted: object, **kwargs: object) -> None:
    """set_password runs after the row is written and skip_postgeneration_save is on."""
    if create:
        user.save()


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")
    is_staff = True
    persist = factory.PostGeneration(_save_when_created)


def make_clinician(username: str, groups: tuple[str, ...]) -> User:
    """A staff user with the clinician role, covering `groups` (guardian grants)."""
    user = UserFactory.create(username=username)
    user.groups.add(Group.objects.get(name=CLINICIAN))
    clinician_groups_set(user=user, groups=MedicalGroup.objects.filter(slug__in=groups))
    return user


def make_safety_lead(username: str) -> User:
    user = UserFactory.create(username=username)
    user.groups.add(Group.objects.get(name=SAFETY_LEAD))
    return user


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def make_nudge(patient, *, at=None, review: bool = False):
    """A nudge made by the real decision service. The policy may choose not to nudge, so each
    try takes the next minute (a decision point is decided once) and a fresh seed. Tries go
    forward in time from the patient's latest decision: a moment before an earlier nudge
    would count as too soon after it. Unless `review`, a nudge the rules send to review is
    passed over (it would not reach the patient)."""
    import datetime as dt

    import numpy as np
    from django.db.models import Max
    from django.utils import timezone

    from nudges.models import DecisionPoint, Delivery, DeliveryState, Outcome
    from nudges.services.decisions import decision_make

    latest = DecisionPoint.objects.filter(patient=patient).aggregate(m=Max("moment"))["m"]
    at = at or timezone.now()
    if latest is not None and latest >= at:
        at = latest + dt.timedelta(minutes=1)
    for attempt in range(240):
        decision, created = decision_make(
            patient=patient,
            now=at + dt.timedelta(minutes=attempt),
            rng=np.random.default_rng(attempt),
        )
        if created and decision.outcome == Outcome.NUDGE:
            delivery = Delivery.objects.select_related("template").get(decision=decision)
            if review == (delivery.state == DeliveryState.AWAITING_REVIEW):
                return delivery
    raise AssertionError("the policy never chose such a nudge")


_row_minutes = itertools.count()


def make_delivery_row(patient, state: str, *, due_at=None, template=None):
    """A delivery sitting in `state`, written directly as rows (no policy, no gate): for tests
    about what happens next to it."""
    import datetime as dt

    from django.utils import timezone

    from nudges.models import Decision, DecisionPoint, Delivery, Template

    now = timezone.now().replace(second=0, microsecond=0)
    template = template or Template.objects.order_by("slug").first()
    point = DecisionPoint.objects.create(
        patient=patient, moment=now + dt.timedelta(minutes=next(_row_minutes)), trigger="app_open"
    )
    decision = Decision.objects.create(
        decision_point=point,
        patient=patient,
        outcome="nudge",
        reason="chosen",
        policy_name="baseline",
        policy_version="baseline-1",
        template=template,
        template_version=template.version,
        propensity=0.5,
        receipt={},
    )
    return Delivery.objects.create(
        decision=decision,
        patient=patient,
        template=template,
        state=state,
        why="test",
        due_at=due_at,
        expires_at=(due_at or now) + dt.timedelta(hours=24),
    )
