"""FL_HTTPS=1: the TLS deployment Django's `check --deploy` asks for, in one variable."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def deploy_check(tmp_path: Path, **env: str) -> set[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FL_", "DEBUG"))}
    run = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120,
                         env={**base, "SECRET_KEY": "k" * 60 + "-not-a-real-secret-but-long-and-varied-0123456789",
                              "ALLOWED_HOSTS": "fl.example.org", "FL_DATA_DIR": str(tmp_path), **env})
    return set(re.findall(r"\(security\.(W\d+)\)", run.stdout + run.stderr))


@pytest.mark.parametrize("proxy", ["0", "1"])
def test_https_mode_clears_the_deploy_checks_for_tls(tmp_path, proxy):
    plain = deploy_check(tmp_path)
    tls = deploy_check(tmp_path, FL_HTTPS="1", FL_BEHIND_PROXY=proxy)

    assert {"W004", "W008", "W012", "W016"} <= plain
    assert tls <= {"W005", "W021"}  # HSTS for subdomains and preloading: the operator's choice
    assert deploy_check(tmp_path, FL_HTTPS="1", FL_HSTS_INCLUDE_SUBDOMAINS="1", FL_HSTS_PRELOAD="1") == set()
