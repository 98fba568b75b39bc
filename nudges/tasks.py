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


@shared_task(time_limit=3600, soft_time_limit=3500)
def model_train() -> dict:
    """Nightly: train a challenger on the last NUDGE_TRAINING_DAYS days, promote it only if
    it beats the champion offline."""
    from nudges.services.training import model_train as train

    return train().summary()


@shared_task(time_limit=600, soft_time_limit=570, acks_late=True)
def decisions_batch_chunk(run_id: str, chunk: int) -> int:
    """One chunk of a batch run (ids only; safe to run twice)."""
    from nudges.services.batch import batch_chunk

    return batch_chunk(run_id=run_id, chunk=chunk)
