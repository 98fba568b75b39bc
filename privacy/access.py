"""Who may see the reports: compliance officers, by their role (clinicians.roles.COMPLIANCE),
and nobody else. Superuser status grants nothing here, as with clinicians' groups: seeing
reports is always an explicit role. Anyone else gets 404 from every report page and endpoint,
as if they did not exist."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from clinicians.roles import COMPLIANCE
from privacy.models import PrivacyBudget, Release


def is_compliance_officer(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.groups.filter(name=COMPLIANCE).exists()  # type: ignore[attr-defined]
    )


def releases_for_officer(user: AbstractBaseUser | AnonymousUser | None) -> QuerySet[Release]:
    if not is_compliance_officer(user):
        return Release.objects.none()
    return Release.objects.select_related("released_by")


def budgets_for_officer(user: AbstractBaseUser | AnonymousUser | None) -> QuerySet[PrivacyBudget]:
    if not is_compliance_officer(user):
        return PrivacyBudget.objects.none()
    return PrivacyBudget.objects.all()
