"""fedsite settings: one file, 12-factor. Every variable is listed in README.md and .env.example.

No variables set gives the embedded default (SQLite, eager Celery, in-memory channel layer);
DATABASE_URL and REDIS_URL switch to the scaled mode with the same code paths.
"""
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from fedsite.env import envbool, envchoice, envfloat, envint, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("FL_DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", False)
SECRET_KEY = envstr("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in production, or DEBUG=1 for local development."
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG=1"
ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
if DEBUG:
    ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    # First, so its `runserver` (uvicorn, fedsite/management/commands/runserver.py) wins over staticfiles'.
    "fedsite",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from /static/, no CDN
    "channels",
    "aggregation",
    "nodes_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the path, query or cookies: a NUL in them is a 400, never a database error.
    "fedsite.requestguard.NulGuardMiddleware",
    # Serves /static/ from this process in every mode (runserver serves it only with DEBUG=1).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "fedsite.readguard.ReadProtectionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# TLS (README "Deploying behind TLS"): FL_HTTPS=1 when clients reach the server over https, directly or
# through a proxy (FL_BEHIND_PROXY=1 trusts its X-Forwarded-Proto). `check --deploy` is then clean.
FL_HTTPS = envbool("FL_HTTPS", False)
# Behind a proxy: its X-Forwarded-Proto says https, its X-Forwarded-For's last address is the client's.
FL_BEHIND_PROXY = envbool("FL_BEHIND_PROXY", False)
if FL_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^status$"]  # a load balancer's plain-http health check
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("FL_HSTS_SECONDS", 31_536_000, minimum=0)
    # Both bind every subdomain (and, preloaded, browsers for years): the operator's decision, off by default.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("FL_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = envbool("FL_HSTS_PRELOAD", False)
    if FL_BEHIND_PROXY:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

ROOT_URLCONF = "fedsite.urls"
WSGI_APPLICATION = "fedsite.wsgi.application"
ASGI_APPLICATION = "fedsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database: SQLite file by default, anything dj-database-url understands via DATABASE_URL.
DATABASE_URL = envstr("DATABASE_URL")
if DATABASE_URL:
    # conn_max_age=0: under ASGI every request runs in its own thread, and persistent
    # connections would outlive those threads.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "fedsite.sqlite3"),
            # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue instead of
            # failing with "database is locked" (SQLite ignores select_for_update).
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves the files where runserver finds them (static/ and the apps), scanned once at
# start: no collectstatic step and no STATIC_ROOT.
WHITENOISE_USE_FINDERS = True

# Uploads of model parameters can be large; one limit guards every body read.
FL_MAX_UPDATE_BYTES = envint("FL_MAX_UPDATE_BYTES", 128 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = FL_MAX_UPDATE_BYTES
# An initial model file (`POST /api/experiments`, the admin's add form) may be larger than an update.
FL_MAX_INIT_BYTES = envint("FL_MAX_INIT_BYTES", 1 << 30, minimum=1024)

# The HTTP front door (fedsite/webserver.py), judged before a body is read: a body over this many bytes
# needs credentials (an Authorization header or a session cookie), or it is refused at its headers.
FL_ANONYMOUS_BODY_BYTES = envint("FL_ANONYMOUS_BODY_BYTES", 1024 * 1024, minimum=1024)
# A request's headers must arrive within FL_HEADER_TIMEOUT_S and total at most FL_MAX_HEADER_BYTES; a
# body that stops arriving for FL_BODY_TIMEOUT_S ends in 408 (slowloris).
FL_HEADER_TIMEOUT_S = envfloat("FL_HEADER_TIMEOUT_S", 10.0, minimum=0.1)
FL_MAX_HEADER_BYTES = envint("FL_MAX_HEADER_BYTES", 64 * 1024, minimum=1024)
FL_BODY_TIMEOUT_S = envfloat("FL_BODY_TIMEOUT_S", 15.0, minimum=0.1)
# runserver (uvicorn): pending connections the kernel queues, idle keep-alive, grace for open requests
# at shutdown.
FL_LISTEN_BACKLOG = envint("FL_LISTEN_BACKLOG", 2048, minimum=16)
FL_KEEP_ALIVE_S = envint("FL_KEEP_ALIVE_S", 75, minimum=1)
FL_SHUTDOWN_GRACE_S = envint("FL_SHUTDOWN_GRACE_S", 5, minimum=0)
# Uploads decoded, checked and stored at once per server process; the others wait with their body
# spooled to disk. Each one in progress holds its body and SQLite's copy of it in memory.
FL_UPLOAD_CONCURRENCY = envint("FL_UPLOAD_CONCURRENCY", 2, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["fedsite.jsonparse.BoundedJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "fedsite.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "fedsite.schema.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "fedsite API",
    "DESCRIPTION": (
        "Federated learning coordination: nodes, rounds, updates and model versions.\n\n"
        "Every error is a 4xx JSON body `{\"error\": \"<code>\", \"detail\": \"<sentence>\"}`. Nodes authenticate "
        "with their token (`nodeToken`), operators as a Django staff user (`basicAuth` or `cookieAuth`). Reads are "
        "open unless the server runs with FL_LOGIN_REQUIRED=1: then every GET (this schema and its Swagger UI and "
        "ReDoc pages too) needs a login session or a node's token, and answers 401 `login_required` without."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ExperimentStatusEnum": "aggregation.serializers.EXPERIMENT_STATUSES",
        "RoundStatusEnum": "aggregation.serializers.ROUND_STATUSES",
        "RoundStateStatusEnum": "aggregation.serializers.ROUND_STATE_STATUSES",
        "AcceptedStatusEnum": "aggregation.serializers.ACCEPTED_STATUSES",
        "NodeStatusEnum": "nodes_app.serializers.NODE_STATUSES",
        "FeatureScalingStatusEnum": "aggregation.serializers_models.FEATURE_STATUSES",
    },
}

# --- Redis: the Celery broker and the channel layer in the scaled mode.
REDIS_URL = envstr("REDIS_URL")
FL_MODE = "scaled" if REDIS_URL else "embedded"

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = envint("FL_TASK_TIME_LIMIT_S", 600, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - 30)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # A task of a killed worker comes back after this many seconds (acks_late); keep it above
    # the longest aggregation.
    FL_VISIBILITY_TIMEOUT_S = envint("FL_VISIBILITY_TIMEOUT_S", 900, minimum=2)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": FL_VISIBILITY_TIMEOUT_S,
        # kombu scans for messages of dead workers every interval × throttle seconds (100 s by
        # default); scan at most every 10 s so a redelivery follows the visibility timeout closely.
        "unacked_restore_interval": max(1, min(10, FL_VISIBILITY_TIMEOUT_S // 2)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
    }
    # With Redis down, an upload must still answer quickly: fail the enqueue fast and let the
    # sweeper send it again (the upload itself is already committed).
    CELERY_BROKER_CONNECTION_TIMEOUT = 2
    CELERY_TASK_PUBLISH_RETRY_POLICY = {
        "max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5,
    }
    CELERY_TASK_ALWAYS_EAGER = False
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # socket_timeout above channels-redis' 5 s blocking pop keeps idle websockets alive.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "prefix": "fedsite"},
        }
    }
else:
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True
    CELERY_TASK_EAGER_PROPAGATES = True
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Federation: the prototype's variables keep their meaning; FL_* are the new knobs.
RUN_AS = envchoice("RUN_AS", "server", ("server", "node"))
NODE_ID = envstr("NODE_ID")
SERVER_ADDR = envstr("SERVER_ADDR")  # nodes: empty = find the server in etcd, else http://127.0.0.1:5000
TOTAL_NODES = envint("TOTAL_NODES", 3, minimum=1)
ETCD_ENDPOINTS = envstr("ETCD_ENDPOINTS")
FL_ETCD_TTL_S = envint("FL_ETCD_TTL_S", 30, minimum=2)  # etcd lease TTL of nodes and the server; 2 is etcd's minimum
FL_PUBLIC_URL = envstr("FL_PUBLIC_URL")  # this server's URL, registered under /fedlearn/server for nodes
FL_EXPERIMENT = envstr("FL_EXPERIMENT", "default")
FL_MIN_NODES = envint("FL_MIN_NODES", TOTAL_NODES // 2 + 1, minimum=1)
FL_ROUND_TIMEOUT_S = envfloat("FL_ROUND_TIMEOUT_S", 300.0, minimum=0.1)
FL_ON_TIMEOUT = envchoice("FL_ON_TIMEOUT", "fail", ("fail", "extend"))
FL_MAX_ROUNDS = envint("FL_MAX_ROUNDS", 0, minimum=0)
FL_STRATEGY = envstr("FL_STRATEGY", "fedavg")
FL_STRATEGY_PARAMS = envstr("FL_STRATEGY_PARAMS", "{}")
FL_MODEL_LAYERS = envstr("FL_MODEL_LAYERS", "10,64,1")
FL_SEED = envint("FL_SEED", 0, minimum=0)
FL_EPOCHS = envint("FL_EPOCHS", 10, minimum=1)
FL_LEARNING_RATE = envfloat("FL_LEARNING_RATE", 0.01, minimum=0.0)
FL_BATCH_SIZE = envint("FL_BATCH_SIZE", 0, minimum=0)
FL_UPDATE_MAX_NORM = envfloat("FL_UPDATE_MAX_NORM", 0.0, minimum=0.0) or None  # 0 / unset: no bound
# Defaults against one bad node, relative to the round's median (3+ updates; 0 turns them off): an update
# farther from the model than this many times the median distance is rejected, and no node weighs more
# than this many times the median num_examples.
FL_OUTLIER_FACTOR = envfloat("FL_OUTLIER_FACTOR", 10.0, minimum=0.0)
FL_WEIGHT_CAP_FACTOR = envfloat("FL_WEIGHT_CAP_FACTOR", 10.0, minimum=0.0)
FL_UPDATE_NORM_MODE = envchoice("FL_UPDATE_NORM_MODE", "reject", ("reject", "clip"))
FL_UPDATE_ENCODING = envchoice("FL_UPDATE_ENCODING", "none", ("none", "fp16", "int8"))  # nodes' upload compression
# Real data (README "Real data"): the default experiment's task, server-side test set and stop condition.
FL_MODEL_TASK = envchoice("FL_MODEL_TASK", "regression", ("regression", "classification"))
# How nodes with --data scale their features (README "Feature scaling"): global = federated statistics.
FL_FEATURE_SCALING = envchoice("FL_FEATURE_SCALING", "global", ("global", "node", "range"))
FL_SERVER_EVAL = envstr("FL_SERVER_EVAL").strip()  # digits | breast_cancer | wine | iris | diabetes | csv:PATH
FL_SERVER_EVAL_TARGET = envstr("FL_SERVER_EVAL_TARGET").strip()  # label column of a csv: test set
FL_STOP_WHEN = envstr("FL_STOP_WHEN").strip()  # e.g. val_accuracy>=0.95 or loss<=0.05; empty: max_rounds only
FL_STOP_PATIENCE = envint("FL_STOP_PATIENCE", 1, minimum=1)
FL_ENROLLMENT_TOKEN = envstr("FL_ENROLLMENT_TOKEN")
FL_METRICS_TOKEN = envstr("FL_METRICS_TOKEN")
FL_SWEEP_INTERVAL_S = envfloat("FL_SWEEP_INTERVAL_S", 2.0 if REDIS_URL else 0.5, minimum=0.05)
# Scaled mode: Celery beat (`celery -A fedsite worker -B`, or a separate `celery -A fedsite beat`)
# runs the sweeper; the embedded mode runs it in a thread of the server process.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Beat's tasks live apart from the tasks the services enqueue (aggregation/beat.py says why).
CELERY_IMPORTS = ("aggregation.beat",)
CELERY_BEAT_SCHEDULE = {
    "sweep-rounds": {"task": "aggregation.beat.rounds_sweep", "schedule": FL_SWEEP_INTERVAL_S},
}
FL_AGGREGATION_RETRY_S = envfloat("FL_AGGREGATION_RETRY_S", 15.0, minimum=0.0)
FL_CREATE_DEFAULT_EXPERIMENT = True
FL_EMBEDDED_SWEEPER = envbool("FL_EMBEDDED_SWEEPER", True)
FL_LONGPOLL_MAX_S = envfloat("FL_LONGPOLL_MAX_S", 30.0, minimum=0.0)
# Seconds between a waiting long-poll's re-checks of the database. A commit in the server's own process
# wakes the poll at once (always so in the embedded mode, where the re-check is only a safety net); one
# in a Celery worker (scaled mode) is seen at the next re-check.
FL_LONGPOLL_RECHECK_S = envfloat("FL_LONGPOLL_RECHECK_S", 1.0 if REDIS_URL else 5.0, minimum=0.05)
FL_NODE_STALE_S = envfloat("FL_NODE_STALE_S", 60.0, minimum=1.0)
FL_NODE_OFFLINE_S = envfloat("FL_NODE_OFFLINE_S", 300.0, minimum=1.0)
FL_DASHBOARD_LOGIN_REQUIRED = envbool("FL_DASHBOARD_LOGIN_REQUIRED", False)
# Every read (dashboard, API, model downloads, /metrics without its token) needs a login or a node's
# token; FL_DASHBOARD_LOGIN_REQUIRED, its older name, turns it on too.
FL_LOGIN_REQUIRED = envbool("FL_LOGIN_REQUIRED", False) or FL_DASHBOARD_LOGIN_REQUIRED
# Sign-in throttling (admin login, operator API): this many failures for one account from one address
# (four times as many from one address) within the window make it wait for the window's end.
FL_LOGIN_MAX_FAILURES = envint("FL_LOGIN_MAX_FAILURES", 5, minimum=1)
FL_LOGIN_WINDOW_S = envfloat("FL_LOGIN_WINDOW_S", 900.0, minimum=1.0)
# The throttle's counts live in the cache: Redis in the scaled mode, so every web process shares them.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                      "KEY_PREFIX": "fedsite"}} if REDIS_URL else {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LOG_LEVEL = envstr("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": "INFO" if LOG_LEVEL == "DEBUG" else LOG_LEVEL},
        "uvicorn.error": {"level": "WARNING"},
    },
}
