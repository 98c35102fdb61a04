"""The mesh tests run the end-to-end harness of tests/e2e (its fixtures:
the DynamoDB-compatible backend, simulated clusters, Envoy processes,
boto3 clients, all stopped at teardown), loaded here under another module
name so that the two conftest files do not clash."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))
sys.path.insert(0, str(Path(__file__).resolve().parent))

_spec = importlib.util.spec_from_file_location("e2e_conftest", E2E / "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

# The fixtures, and the hooks that attach Envoy's log to a failure and let
# SIGTERM stop what the tests started.
backend = _e2e.backend
make_cluster = _e2e.make_cluster
make_envoy = _e2e.make_envoy
dynamodb = _e2e.dynamodb
table_name = _e2e.table_name
pytest_configure = _e2e.pytest_configure
pytest_runtest_makereport = _e2e.pytest_runtest_makereport
