"""A bad filter configuration makes Envoy refuse to start, and one log line
names the key and the problem; every shipped Envoy YAML validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.filter_config import REPO, build_wasm, each_dict, envoy_config
from harness import net
from harness.tls import TestCA
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
        if rel.parts[0] in ("target", ".venv") or rel.parts[0].startswith(".") or "node_modules" in rel.parts:
            continue
        if "static_resources:" in path.read_text():
            found.append(path)
    return found


def test_the_shipped_config_is_found():
    assert REPO / "envoy" / "envoy.yaml" in shipped_envoy_configs()


def with_local_module(config: dict, wasm: Path) -> dict:
    """Points every Wasm module path that does not exist here (a container's
    path, e.g. /etc/envoy/alternator_lb.wasm) at the module built here."""
    def edit(node: dict) -> None:
        local = node.get("code", {}).get("local") if isinstance(node.get("code"), dict) else None
        if isinstance(local, dict) and "filename" in local and not (REPO / local["filename"]).exists():
            local["filename"] = str(wasm)
    each_dict(config, edit)
    return config


def with_local_ca(config: dict, ca_file: Path) -> None:
    """Points every trusted_ca that does not exist here at `ca_file`."""
    def edit(node: dict) -> None:
        ca = node.get("trusted_ca")
        if isinstance(ca, dict) and "filename" in ca and not Path(ca["filename"]).exists():
            ca["filename"] = str(ca_file)
    each_dict(config, edit)


@pytest.mark.parametrize("path", shipped_envoy_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_envoy_config_validates(path, tmp_path):
    wasm = build_wasm()  # the configs load the real module
    # From the repository root: the shipped config names the module by the
    # path scripts/build writes it to, relative to where Envoy starts. Configs
    # made for a container name the module where it is mounted there.
    config = with_local_module(yaml.safe_load(path.read_text()), wasm)
    # A CA bundle path the operator fills in (envoy-tls.yaml) must exist for
    # Envoy to accept the config: give it a CA made here.
    with_local_ca(config, TestCA(tmp_path / "ca", "validate-ca").ca_file)
    checked = tmp_path / path.name
    checked.write_text(yaml.safe_dump(config))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(checked), "-l", "info"],
                          cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), output[-3000:]
    assert "Deprecated field" not in output, output[-3000:]
