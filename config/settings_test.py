"""Settings for the test suite: the same as config.settings, with a throwaway data directory,
a fast password hasher, and Celery tasks run in-process unless a test uses a real worker.
DATABASE_URL and CELERY_BROKER_URL still come from the environment, so the same suite runs on
SQLite or on PostgreSQL and Redis (see .ci/run)."""

import os
import tempfile

os.environ.setdefault("NUDGE_DATA_DIR", tempfile.mkdtemp(prefix="nudge-test-"))

from config.settings import *  # noqa: E402,F403
from config.settings import env_bool  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", True)
CELERY_TASK_EAGER_PROPAGATES = True
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
STATIC_ROOT = DATA_DIR / "static"  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# Every test patient in the treatment arm unless a test says otherwise (arms come from a keyed
# hash, so a holdout patient would otherwise never get a nudge).
NUDGE_ARMS = "treatment:100"
