"""A ClientApp without DP does not import Opacus (~3.5 s of every message's fresh ClientApp process)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

CHECK = """
import sys
import clients.app, fedrec.privacy
assert not [m for m in sys.modules if m.split('.')[0] == 'opacus'], 'opacus imported without DP'
from fedrec.privacy import FP32DPOptimizer, epsilon_of  # the per-sample names load on first access
assert 'opacus' in sys.modules and FP32DPOptimizer.__module__ == 'fedrec.privacy.per_sample'
assert 0 < epsilon_of([(1.0, 0.01, 100)], 1e-5) < float('inf')  # the accountant imports it where it is used
"""


def test_importing_the_client_app_does_not_import_opacus() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
