"""A bad filter configuration makes Envoy refuse to start, and one log line
names the key and the problem; every shipped Envoy YAML validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from filter_setup import REPO, build_wasm, envoy_config
from harness import net
import subprocess

from harness.envoy import envoy_binary, run_envoy_expect_failure

BAD_CONFIGS = [
    ('{"seeds": ["127.0.0.1"], "port": 0}', "port", "must be an integer from 1 to 65535"),
    ('{"seeds": ["127.0.0.1"], "refresh_intervall_ms": 500}', "refresh_intervall_ms", "unknown key"),
    ('{"port": 8000}', "seeds", "is required"),
    ('{"seeds": []}', "seeds", "must not be empty"),
    ('{"seeds": ["alternator.example"]}', "seeds", "is not an IP literal"),
    ('{"seeds": ["127.0.0.1"], "refresh_interval_ms": "fast"}', "refresh_interval_ms", "must be an integer"),
    ('{"seeds": ["127.0.0.1"], "datacenter": ""}', "datacenter", "non-empty string"),
]


@pytest.mark.parametrize("raw,key,problem", BAD_CONFIGS, ids=[c[1] + "-" + c[2].split()[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_key(raw, key, problem, tmp_path):
    config = envoy_config(listener_port=net.free_port(), admin_port=net.free_port(), raw_filter_config=raw)
    code, log = run_envoy_expect_failure(config, timeout=20, workdir=tmp_path)
    assert code not in (0, None), "Envoy should have refused to start"
    lines = [line for line in log.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1, "one log line per refusal:\n" + "\n".join(lines)
    assert f'key "{key}"' in lines[0] and problem in lines[0], lines[0]


def test_invalid_json_is_refused(tmp_path):
    config = envoy_config(listener_port=net.free_port(), admin_port=net.free_port(), raw_filter_config='{"seeds": [')
    code, log = run_envoy_expect_failure(config, timeout=20, workdir=tmp_path)
    assert code not in (0, None)
    assert "invalid configuration: not valid JSON" in log


def shipped_envoy_configs() -> list[Path]:
    """Every YAML in the repository that is an Envoy bootstrap config."""
    found = []
    for path in sorted(REPO.glob("**/*.yaml")) + sorted(REPO.glob("**/*.yml")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("target", ".venv", "node_modules") or rel.parts[0].startswith("."):
            continue
        if "static_resources:" in path.read_text():
            found.append(path)
    return found


def test_the_shipped_config_is_found():
    assert REPO / "envoy" / "envoy.yaml" in shipped_envoy_configs()


@pytest.mark.parametrize("path", shipped_envoy_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_envoy_config_validates(path):
    build_wasm()  # the configs load the real module
    # From the repository root: the shipped config names the module by the
    # path cargo builds it at, relative to where Envoy starts.
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "info"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), output[-3000:]
    assert "Deprecated field" not in output, output[-3000:]
