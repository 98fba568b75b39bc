"""Who may see what in the review queue. A clinician covers the medical groups on which they
hold the object permission safety.review_group (django-guardian); global permissions and
superuser status grant nothing here, so covering a group is always an explicit grant."""

from collections.abc import Iterable

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm

from clinicians.models import Clinician
from nudges.models import ReviewRequest
from safety.models import MedicalGroup

REVIEW_PERMISSION = "safety.review_group"


def is_clinician(user: User | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.is_active and hasattr(user, "clinician"))


def covered_groups(user: User | AnonymousUser) -> QuerySet[MedicalGroup]:
    if not is_clinician(user):
        return MedicalGroup.objects.none()
    return get_objects_for_user(
        user,
        REVIEW_PERMISSION,
        klass=MedicalGroup,
        with_superuser=False,
        accept_global_perms=False,
    )


def review_requests_for_clinician(user: User | AnonymousUser) -> QuerySet[ReviewRequest]:
    """Every review request the clinician may see: those that need a decision for one of the
    groups they cover, and those with no group (a patient in no group, or groups unknown),
    which any clinician may take."""
    if not is_clinician(user):
        return ReviewRequest.objects.none()
    through = ReviewRequest.groups.through
    covered = list(covered_groups(user).values_list("pk", flat=True))
    needs_mine = Exists(
        through.objects.filter(reviewrequest_id=OuterRef("pk"), medicalgroup_id__in=covered)
    )
    has_groups = Exists(through.objects.filter(reviewrequest_id=OuterRef("pk")))
    return ReviewRequest.objects.filter(Q(needs_mine) | ~Q(has_groups))


@transaction.atomic
def clinician_groups_set(*, user: User, groups: Iterable[MedicalGroup]) -> Clinician:
    """Make the user a clinician covering exactly `groups`."""
    clinician, _ = Clinician.objects.get_or_create(user=user)
    wanted = {g.pk: g for g in groups}
    for group in covered_groups(user):
        if group.pk not in wanted:
            remove_perm(REVIEW_PERMISSION, user, group)
    for group in wanted.values():
        assign_perm(REVIEW_PERMISSION, user, group)
    return clinician
