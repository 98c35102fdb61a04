"""What the example checks share with the end-to-end tests: the harness
(Envoy binary, simulated cluster) and the module exactly as it ships."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness.filter_config import build_wasm  # noqa: E402


@pytest.fixture(scope="session")
def module() -> Path:
    """target/alternator_lb.wasm, built by scripts/build if needed."""
    return build_wasm()
