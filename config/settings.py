"""RLHF Studio settings. Every value comes from the environment and has a quickstart default.

The defaults run the whole product on one machine with nothing to install: SQLite under ``var/`` and
kombu's filesystem transport under ``var/broker/`` as the Celery broker. Compose and CI set
``DATABASE_URL`` to PostgreSQL and ``CELERY_BROKER_URL`` to Redis. The README lists every variable.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.dotenv import env_file

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The quickstart's .env (``make run`` writes a SECRET_KEY there); variables set in the environment win.
if env_file().exists():
    environ.Env.read_env(env_file())

# Everything the quickstart writes (database, broker folders, artefacts) lives under one folder.
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
ARTEFACTS_DIR = Path(env.str("ARTEFACTS_DIR", default=str(VAR_DIR / "artefacts"))).resolve()
# The artefact store (snapshots, model versions, run logs, metrics, generated files): ARTEFACTS_DIR unless a URL
# names another, such as s3://bucket/prefix (endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY). Uploads being imported stay in ARTEFACTS_DIR, shared by the web and default workers.
ARTEFACTS_URL = env.str("ARTEFACTS_URL", default="")
# This machine's own scratch folder: a run's files while it runs, before they go to a remote store.
WORK_DIR = Path(env.str("WORK_DIR", default=str(VAR_DIR / "work"))).resolve()

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set. `make run` writes one to {env_file()} for the quickstart; otherwise set "
            "SECRET_KEY in the environment (any long random string), or DEBUG=true for local development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    "django_celery_beat",
    "axes",
    "csp",
    "labeling",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "labeling.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "labeling.middleware.RequestGuardMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out login with 429
]

ROOT_URLCONF = "config.urls"

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

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# Database: SQLite under var/ unless DATABASE_URL names another (postgres://... uses psycopg 3).
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets readers work beside the one writer; IMMEDIATE takes the write lock when a transaction
    # starts, so two writers queue on the busy timeout instead of failing half-way through.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_TIMEOUT", default=30),
    }
    # A file, not memory, so that a worker process started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
    # Values travel apart from the SQL text, and psycopg prepares a statement run five times on a connection, so
    # PostgreSQL stops parsing and planning it on every request (Django leaves preparing off unless asked). Set
    # DB_PREPARED_STATEMENTS=false behind a pooler that cannot keep prepared statements (PgBouncer before 1.21 in
    # transaction mode).
    DATABASES["default"]["OPTIONS"] = {
        "server_side_binding": env.bool("DB_SERVER_SIDE_BINDING", default=True),
        "prepare_threshold": 5 if env.bool("DB_PREPARED_STATEMENTS", default=True) else None,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "frontend:login"
LOGIN_REDIRECT_URL = "frontend:projects"
LOGOUT_REDIRECT_URL = "frontend:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Served by whitenoise from STATIC_ROOT (collectstatic) in production, from the apps under DEBUG.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Sessions live in the database and are cached (in each process by default, so most requests skip the session
# query); CACHE_URL=redis://... shares the cache, and the API's request counts, across processes.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# HTTPS, on unless DEBUG: plain HTTP is redirected, cookies are sent only over HTTPS, and browsers are told (HSTS)
# to come back over HTTPS only. Behind a proxy or load balancer that ends TLS, set TLS_PROXY=true: its
# X-Forwarded-Proto header then says whether the request came over HTTPS (the proxy must set it and strip the
# client's). HTTPS=false serves plain HTTP: the compose stack on localhost, the benches' servers, the tests.
HTTPS = env.bool("HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the container health check calls it over plain HTTP, from inside
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=HTTPS)
SECURE_HSTS_SECONDS = env.int("HSTS_SECONDS", default=365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("HSTS_PRELOAD", default=HTTPS)
if env.bool("TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Celery. The default broker needs no server: kombu's filesystem transport under var/broker/.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
CELERY_BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(VAR_DIR / "broker"))).resolve()
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "store_processed": False,
    }
    for folder in ("queue", "control", "processed"):
        (CELERY_BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
else:
    # Training tasks run for hours and are acknowledged late: keep Redis from redelivering them.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=24 * 3600),
    }
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TRAINING_QUEUE = env.str("CELERY_TRAINING_QUEUE", default="training")
CELERY_TASK_QUEUES = (Queue("default"), Queue(CELERY_TRAINING_QUEUE))
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

REST_FRAMEWORK = {
    # Token first: an anonymous call gets 401 with "WWW-Authenticate: Token", scripts send
    # "Authorization: Token <key>"; the browser pages use the session and its CSRF token.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["labeling.api.parsers.SafeJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "labeling.api.pagination.Pages",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "labeling.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["labeling.api.throttles.UserThrottle", "labeling.api.throttles.AnonThrottle"],
    # "?format=" names a file format in this API (exports), not a renderer.
    "URL_FORMAT_OVERRIDE": None,
}

# API request rates (labeling/api/throttles.py), counted in the cache (per process with the default local
# memory cache; set CACHE_URL to a Redis URL to count across processes).
API_RATE_USER = env.str("API_RATE_USER", default="20000/min")
API_RATE_ANON = env.str("API_RATE_ANON", default="60/min")

SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF Studio API",
    "DESCRIPTION": "Projects, prompts, responses and tasks; rating; imports, exports and dataset snapshots.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The exports' "gold" and "paused" filters share their choices: one enum, named for what it chooses.
    "ENUM_NAME_OVERRIDES": {
        "IncludeExcludeOnlyEnum": "labeling.selectors.WHICH",
        "RunKindEnum": "labeling.models.runs.RunKind",
        "RunStatusEnum": "labeling.models.runs.RunStatus",
        "ModelKindEnum": "labeling.models.runs.ModelKind",
    },
    # Row ids in paths (labeling.apps.IdConverter): up to 18 digits, so every one fits a database integer.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "labeling.api.schema.error_responses",
    ],
}

# The trainer: how the training worker launches it, and where converted models are cached.
ACCELERATE_CONFIG_FILE = env.str("ACCELERATE_CONFIG_FILE", default="")
MODEL_CACHE_DIR = Path(env.str("MODEL_CACHE_DIR", default=str(ARTEFACTS_DIR / "cache"))).resolve()
TRAINING_HEARTBEAT_TIMEOUT = env.int("TRAINING_HEARTBEAT_TIMEOUT", default=120)
# How this training worker's runs that generate (PPO, Generate responses, evaluation, critique chains) write
# responses: training.config.RolloutConfig. The loop with a dynamic cache unless set (GPU machines: see README).
ROLLOUT_ENGINE = env.str("ROLLOUT_ENGINE", default="loop")
ROLLOUT_STATIC_CACHE = env.bool("ROLLOUT_STATIC_CACHE", default=False)
ROLLOUT_CUDA_GRAPH = env.bool("ROLLOUT_CUDA_GRAPH", default=False)
ROLLOUT_VLLM_GPU_MEMORY = env.float("ROLLOUT_VLLM_GPU_MEMORY", default=0.3)

# Imports: uploads larger than this answer 413; accepted ones are stored and imported by a worker.
IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", default=1024**3)

# Webhooks (labeling.services.webhooks): how long a receiver has to answer, how many attempts a delivery gets,
# and the first retry's delay in seconds (doubled after each further failure: 10 s, 20 s, ... about 21 minutes
# after the first attempt for the eighth).
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_RETRY_SECONDS = env.float("WEBHOOK_RETRY_SECONDS", default=10.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

AUTH_USER_MODEL = "labeling.User"
# Django's backend, loading the rater role with the user (one query per request instead of two).
# Content-Security-Policy (django-csp): pages run only our own scripts and styles (no inline ones, no other
# origin), show only our own images, and cannot be framed. Model text cannot fetch anything (rendering.py
# turns its images into links) nor run anything (the sanitiser).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "labeling.auth.ModelBackendWithRole"]

# Failed logins (the rater login page and the admin's): after AXES_FAILURE_LIMIT failures in a row for one
# account, or from one address, that account or address is locked out for AXES_COOLOFF_MINUTES; a success
# resets the count. Admins lift a lockout under "Axes: access attempts" (delete the attempt) or with
# `manage.py axes_reset_username NAME`.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_IPWARE_PROXY_COUNT = env.int("AXES_PROXY_COUNT", default=0) or None  # proxies in front, for the client's address
