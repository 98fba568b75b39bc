"""Settings for the nudge engine. Every value that differs between machines comes from the
environment; docs/operations.md lists them. Defaults are the embedded development set-up
(SQLite, a filesystem Celery broker under NUDGE_DATA_DIR)."""

import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
NUDGE_ENV = env_str("NUDGE_ENV", "development")
if NUDGE_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("NUDGE_ENV must be 'development' or 'production'.")
DATA_DIR = Path(env_str("NUDGE_DATA_DIR", str(BASE_DIR / ".demo")))


def _development_secret(name: str, nbytes: int = 48) -> str:
    """A random secret kept under DATA_DIR, so development needs no set-up but never shares
    a key with another machine. Production must configure every secret explicitly."""
    if NUDGE_ENV == "production":
        raise ImproperlyConfigured(f"{name} must be set when NUDGE_ENV=production.")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f".{name.lower()}"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or _development_secret("DJANGO_SECRET_KEY")
# The key of patient pseudonyms (privacy/pseudonyms.py); its version is part of every
# pseudonym, so a new key gets a new version.
PSEUDONYM_KEY_VERSION = env_str("PSEUDONYM_KEY_VERSION", "1")
if not PSEUDONYM_KEY_VERSION.isalnum():
    raise ImproperlyConfigured("PSEUDONYM_KEY_VERSION must be letters and digits only.")
PSEUDONYM_KEYS = {
    PSEUDONYM_KEY_VERSION: env_str("PSEUDONYM_KEY", "") or _development_secret("PSEUDONYM_KEY")
}
# Master keys of encryption at rest (privacy/crypto.py, docs/privacy.md): "version:key" pairs,
# comma-separated, each key 32 random bytes in URL-safe base64. ENCRYPTION_KEY_VERSION wraps new
# data keys; the other versions are still read while `rotate_keys` moves data off them.
ENCRYPTION_KEY_VERSION = env_str("ENCRYPTION_KEY_VERSION", "1")
ENCRYPTION_KEYS = env_str("ENCRYPTION_KEYS", "") or (
    f"{ENCRYPTION_KEY_VERSION}:{_development_secret('ENCRYPTION_KEYS', nbytes=32)}"
)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "http://localhost,http://127.0.0.1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "core",
    "audit",
    "patients",
    "safety",
    "nudges",
    "clinicians",
    "privacy",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and IMMEDIATE transactions let the web server, worker and beat share one file
    # without "database is locked" errors under normal load.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA page_size=8192; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend with a health check that skips a connection proven in the last second
    # (core/postgresql/base.py). Queries bind their parameters on the server, and psycopg
    # prepares a statement once a connection has run it five times, so PostgreSQL plans it
    # once and Python quotes nothing: the inbox's PostgreSQL CPU per request roughly halved
    # (docs/benchmarks.md). Behind PgBouncer in transaction mode, before 1.21, prepared
    # statements break: DATABASE_PREPARE_THRESHOLD=off turns both off.
    DATABASES["default"]["ENGINE"] = "core.postgresql"
    if env_str("DATABASE_PREPARE_THRESHOLD", "5").strip().lower() != "off":
        DATABASES["default"]["OPTIONS"] = {
            **DATABASES["default"].get("OPTIONS", {}),
            "server_side_binding": True,
            "prepare_threshold": env_int("DATABASE_PREPARE_THRESHOLD", 5, minimum=0),
        }
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", "") or None}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.TokenWithPatientAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Nudge engine API",
    "DESCRIPTION": "Patient-facing JSON API of the privacy-preserving healthcare nudge engine.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Celery: with no broker configured, a filesystem transport under DATA_DIR, so that the worker
# and beat of `make run` really execute scheduled work without any service installed.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "dispatch-outbox": {"task": "nudges.tasks.outbox_dispatch", "schedule": 15.0},
    "release-held-deliveries": {"task": "nudges.tasks.deliveries_release_held", "schedule": 60.0},
    "expire-deliveries": {"task": "nudges.tasks.deliveries_expire", "schedule": 300.0},
    "refresh-popularity": {"task": "nudges.tasks.popularity_refresh", "schedule": 24 * 3600.0},
    "decide-slots": {"task": "nudges.tasks.slots_decide", "schedule": 300.0},
}

# Delivery policy (docs/delivery.md).
NUDGE_DAILY_CAP = env_int("NUDGE_DAILY_CAP", 3, minimum=0)
NUDGE_REPEAT_WINDOW_DAYS = env_int("NUDGE_REPEAT_WINDOW_DAYS", 3, minimum=0)
NUDGE_MIN_GAP_MINUTES = env_int("NUDGE_MIN_GAP_MINUTES", 60, minimum=0)
NUDGE_EXPIRY_HOURS = env_int("NUDGE_EXPIRY_HOURS", 24, minimum=1)
NUDGE_REVIEW_DEADLINE_HOURS = env_int("NUDGE_REVIEW_DEADLINE_HOURS", 48, minimum=1)
NUDGE_EVENTS_MAX_BATCH = env_int("NUDGE_EVENTS_MAX_BATCH", 500, minimum=1)
# Scheduled decision slots, local wall-clock times; swept every 5 minutes over a 10-minute
# window (overlap is harmless: a decision point is decided once).
NUDGE_SLOTS = env_str("NUDGE_SLOTS", "09:00,18:30")
NUDGE_SLOT_WINDOW_MINUTES = env_int("NUDGE_SLOT_WINDOW_MINUTES", 10, minimum=1)
PUSH_PROVIDER = env_str("PUSH_PROVIDER", "nudges.push.DevelopmentProvider")
PUSH_MAX_ATTEMPTS = env_int("PUSH_MAX_ATTEMPTS", 5, minimum=1)
# Privacy (docs/privacy.md): the audit chain's head is also kept outside the database; raw
# events older than the retention period are purged daily.
AUDIT_HEAD_FILE = Path(env_str("AUDIT_HEAD_FILE", str(DATA_DIR / "audit-head.json")))
RAW_EVENT_RETENTION_DAYS = env_int("RAW_EVENT_RETENTION_DAYS", 365, minimum=1)
CELERY_BEAT_SCHEDULE["purge-raw-events"] = {
    "task": "privacy.tasks.events_purge_expired",
    "schedule": 24 * 3600.0,
}

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if NUDGE_ENV == "production":
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The recommender (docs/recommender.md). Models live as files under NUDGE_MODELS_DIR; the
# registry (nudges.ModelVersion) names the champion. Experiment arms are assigned by a keyed
# hash of the pseudonym: sticky, and not guessable without the key.
NUDGE_MODELS_DIR = Path(env_str("NUDGE_MODELS_DIR", str(DATA_DIR / "models")))
NUDGE_MIN_TENURE_DAYS = env_int("NUDGE_MIN_TENURE_DAYS", 7, minimum=0)
NUDGE_TRAINING_DAYS = env_int("NUDGE_TRAINING_DAYS", 90, minimum=7)
NUDGE_EXPERIMENT = env_str("NUDGE_EXPERIMENT", "agenda-1")
NUDGE_ARMS = env_str("NUDGE_ARMS", "treatment:80,control:15,holdout:5")
EXPERIMENT_KEY = env_str("EXPERIMENT_KEY", "") or _development_secret("EXPERIMENT_KEY")
CELERY_BEAT_SCHEDULE["train-model"] = {"task": "nudges.tasks.model_train", "schedule": 24 * 3600.0}

# --- Differentially private reports (privacy/dp, privacy/reports.py; docs/privacy.md) --------
# The budget of one calendar month: the most privacy loss (zCDP rho) one patient may suffer
# from all of that month's reports together. A month's ledger keeps the cap it was opened with.
PRIVACY_PERIOD_CAP_RHO = env_str("PRIVACY_PERIOD_CAP_RHO", "1.0")
try:
    PRIVACY_DELTA = float(env_str("PRIVACY_DELTA", "1e-6"))  # epsilon is shown at this delta
except ValueError:
    raise ImproperlyConfigured("PRIVACY_DELTA must be a number, e.g. 1e-6.") from None
if not 0 < PRIVACY_DELTA < 1:
    raise ImproperlyConfigured("PRIVACY_DELTA must lie strictly between 0 and 1.")
PRIVACY_FIRST_PERIOD = env_str("PRIVACY_FIRST_PERIOD", "2024-01")  # no reports before (YYYY-MM)
# Signs report exports (Ed25519; the seed is the SHA-256 of this secret). verify_report checks.
REPORT_SIGNING_KEY = env_str("REPORT_SIGNING_KEY", "") or _development_secret("REPORT_SIGNING_KEY")
# --- end of differentially private reports ---------------------------------------------------
