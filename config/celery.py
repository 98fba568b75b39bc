import gc
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("nudge_engine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _freeze_loaded_objects(**_: object) -> None:
    """What each pool process loaded at start lives as long as it: keep it out of the garbage
    collector's generations, as the web app does (config/wsgi.py). The pool's processes share
    the cores, so each predicts on one thread."""
    from nudges import recommender

    recommender.BATCH_THREADS = 1
    gc.freeze()
