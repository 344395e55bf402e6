"""Test overrides only; everything else comes from settings.py."""
import os

os.environ.setdefault("DEBUG", "1")

from fedsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests drive the sweeper themselves; a background thread would race them.
FL_EMBEDDED_SWEEPER = False
# Tests create the experiments they use; a default one would be swept along with them.
FL_CREATE_DEFAULT_EXPERIMENT = False
# pytest-django runs with DEBUG off, so enrollment needs the token, as in production.
FL_ENROLLMENT_TOKEN = "test-enrollment-token"
# One SQLite test database per test process, so two test runs on one machine never share a file.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"]["NAME"] = str(DATA_DIR / f"test-{os.getpid()}.sqlite3")  # noqa: F405
# The sign-in throttle's counts: per test process, never a shared Redis that a test's cache.clear() would flush.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
