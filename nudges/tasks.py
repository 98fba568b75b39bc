"""Celery tasks: thin wrappers that call one service. They take no arguments that could carry
health data, and are safe to run twice."""

from celery import shared_task

from nudges.services import deliveries, outbox, popularity, slots


@shared_task(time_limit=120, soft_time_limit=100)
def outbox_dispatch() -> dict[str, int]:
    return outbox.outbox_dispatch()


@shared_task(time_limit=120, soft_time_limit=100)
def deliveries_release_held() -> int:
    return deliveries.deliveries_release_held()


@shared_task(time_limit=300, soft_time_limit=280)
def deliveries_expire() -> int:
    return deliveries.deliveries_expire()


@shared_task(time_limit=900, soft_time_limit=850)
def popularity_refresh() -> int:
    return popularity.popularity_refresh()


@shared_task(time_limit=900, soft_time_limit=850)
def slots_decide() -> int:
    return slots.slots_decide()
