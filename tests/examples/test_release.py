"""scripts/release: the archive holds the module scripts/build makes, a
SHA-256 that matches it, and Envoy configs that load it from the archive's
top directory, as the README's install section says."""
from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from pathlib import Path

from harness.filter_config import REPO
from harness.envoy import envoy_binary


def version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'\[workspace\.package\][^\[]*?\nversion = "([^"]+)"', text).group(1)


def test_release_archive_is_complete_and_its_configs_load_the_module(tmp_path):
    out = subprocess.run([str(REPO / "scripts" / "release")], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=600).stdout
    name = f"alternator-lb-{version()}"
    archive = REPO / "target" / "release-artifact" / f"{name}.tar.gz"
    assert str(archive.relative_to(REPO)) in out

    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (archive.parent / f"{name}.tar.gz.sha256").read_text().split() == [digest, archive.name]

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(n == name or n.startswith(name + "/") for n in names), names
        assert not any("node_modules" in n or "__pycache__" in n for n in names)
        tar.extractall(tmp_path, filter="data")
    top = tmp_path / name
    module = (top / "alternator_lb.wasm").read_bytes()
    assert module == (REPO / "target" / "alternator_lb.wasm").read_bytes()
    assert (top / "alternator_lb.wasm.sha256").read_text().split() == [
        hashlib.sha256(module).hexdigest(), "alternator_lb.wasm"]
    for wanted in ("envoy/envoy.yaml", "envoy/envoy-tls.yaml", "examples/istio/README.md",
                   "examples/envoy-gateway/README.md", "examples/docker-compose/compose.yaml",
                   "README.md", "docs/configuration.md", "LICENSE"):
        assert (top / wanted).is_file(), wanted

    # The plain config validates as unpacked, started from the archive's top.
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy/envoy.yaml"],
                          cwd=top, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (proc.stdout + proc.stderr)[-2000:]
    assert "filename: alternator_lb.wasm" in (top / "envoy" / "envoy-tls.yaml").read_text()
