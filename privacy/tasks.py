"""Celery tasks of the privacy app: thin wrappers that call one service, take no arguments
carrying health data, and are safe to run twice."""

from celery import shared_task

from privacy import retention


@shared_task(time_limit=1800, soft_time_limit=1700)
def events_purge_expired() -> int:
    return retention.events_purge_expired()
