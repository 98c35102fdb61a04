"""The filter as the tests run it: the release .wasm and Envoy configs derived
from the shipped envoy/envoy.yaml (also used by the benchmarks in bench/).

Tests start from the very file users copy, changing only what a test must
(addresses, ports, the filter's JSON configuration), so a mistake in the
shipped config fails the suite.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
SHIPPED_CONFIG = REPO / "envoy" / "envoy.yaml"
TLS_CONFIG = REPO / "envoy" / "envoy-tls.yaml"
WASM = REPO / "target" / "alternator_lb.wasm"

_built = False


def build_wasm() -> Path:
    """Builds the module as it ships (scripts/build) once per test process;
    quick when scripts/test already built it."""
    global _built
    if not _built:
        subprocess.run(
            [str(REPO / "scripts" / "build")],
            stdout=subprocess.DEVNULL,
            cwd=REPO,
            check=True,
        )
        _built = True
    return WASM


@functools.cache
def build_variant(name: str, **build_env: str) -> Path:
    """A second build of the module (``target/alternator_lb_<name>.wasm``),
    made by scripts/build with build-time settings in ``build_env`` (e.g.
    ``ALTERNATOR_LB_FORMAT``), in its own cargo target directory so that it
    never replaces the shipped module; once per test process."""
    wasm = REPO / "target" / f"alternator_lb_{name}.wasm"
    env = {**os.environ, **build_env, "CARGO_TARGET_DIR": str(REPO / "target" / f"variant-{name}")}
    subprocess.run([str(REPO / "scripts" / "build"), "alternator-lb", str(wasm)],
                   stdout=subprocess.DEVNULL, cwd=REPO, env=env, check=True)
    return wasm


def each_dict(node, edit) -> None:
    """Calls `edit` on every mapping inside a parsed config (the configs'
    file paths, CA bundles and module paths sit at varying depths)."""
    if isinstance(node, dict):
        edit(node)
        for v in node.values():
            each_dict(v, edit)
    elif isinstance(node, list):
        for v in node:
            each_dict(v, edit)


def shipped_config(path: Path = SHIPPED_CONFIG) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _http_filters(config: dict) -> list:
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"]


def wasm_plugin(config: dict) -> dict:
    """The Wasm filter's PluginConfig inside an Envoy config."""
    for f in _http_filters(config):
        if f["name"] == "alternator_lb":
            return f["typed_config"]["config"]
    raise KeyError("no alternator_lb filter in config")


def filter_configuration(config: dict) -> dict:
    return json.loads(wasm_plugin(config)["configuration"]["value"])


def envoy_config(
    *,
    listener_port: int,
    admin_port: int,
    filter_config: dict | None = None,
    raw_filter_config: str | None = None,
    shipped: Path = SHIPPED_CONFIG,
    wasm: Path | None = None,
    **filter_keys,
) -> dict:
    """envoy/envoy.yaml with the listener and admin on the given loopback
    ports, the module path made absolute (`wasm`, by default the module
    build_wasm() builds), and the filter's JSON configuration either replaced
    (`filter_config` / `raw_filter_config`) or updated with `filter_keys`."""
    config = copy.deepcopy(shipped_config(shipped))
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listener_port)
    plugin = wasm_plugin(config)
    plugin["vm_config"]["code"]["local"]["filename"] = str(wasm if wasm is not None else build_wasm())
    if raw_filter_config is not None:
        plugin["configuration"]["value"] = raw_filter_config
    else:
        doc = filter_config if filter_config is not None else filter_configuration(config)
        doc = {**doc, **filter_keys}
        plugin["configuration"]["value"] = json.dumps(doc)
    return config
