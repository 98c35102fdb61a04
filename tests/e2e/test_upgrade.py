"""Two module versions in one Envoy, as in an upgrade in place: Envoy loads
the new module while VMs of the old one still serve (same vm_id, so the same
shared-data namespace). Each version keeps its discovery record under a key
that carries its format version, so neither reads the other's record as
damage and resets it.

The second module is the filter built with another format version
(ALTERNATOR_LB_FORMAT, see scripts/build) in its own cargo directory under
target/, so that it neither rebuilds nor is rebuilt by the shipped module's
build; after the first run it is a cache hit.
"""

from __future__ import annotations

import copy
import re
import time

from harness import net
from harness.filter_config import build_variant, wasm_plugin
from harness.proxy import Proxied, create_table, wait_routed
from harness.traffic import Clients, served

NEXT_FORMAT = "e2e-next"
VM_ID = "alternator_lb"


def build_next_module():
    """The filter as it ships, but writing and reading format NEXT_FORMAT."""
    return build_variant("format_next", ALTERNATOR_LB_FORMAT=NEXT_FORMAT)


# Envoy prefixes a Wasm log line with the plugin's root_id and vm_id.
def keys_logged(log: str, root_id: str) -> set[str]:
    """The shared-data keys the VMs of `root_id` said they use."""
    pattern = re.compile(f"wasm log {re.escape(root_id)} {VM_ID}: "
                         r"discovery record in shared data key (\S+)")
    return {m.group(1) for m in pattern.finditer(log)}


def logged_by(log: str, root_id: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if f"wasm log {root_id} {VM_ID}: {text}" in line]


def test_two_format_versions_share_an_envoy_without_resetting_each_other(proxied, dynamodb, table_name):
    next_wasm = build_next_module()
    new_port = 0

    def with_the_upgraded_module(config: dict) -> dict:
        # The upgraded module on a second listener: the same filter
        # configuration and vm_id (so the same shared-data namespace and
        # discovery identity), another module file, and a root_id of its own
        # to tell the two apart in the log (shared data is per vm_id,
        # whatever the root_id).
        listeners = config["static_resources"]["listeners"]
        new = copy.deepcopy(listeners[0])
        new["name"] = "dynamodb_next"
        # Chosen here, so that a start made again on new ports
        # (harness.envoy.on_free_ports) chooses this one again too.
        nonlocal new_port
        new_port = net.free_port()
        new["address"]["socket_address"]["port_value"] = new_port
        hcm = new["filter_chains"][0]["filters"][0]["typed_config"]
        [plugin] = [f["typed_config"]["config"] for f in hcm["http_filters"] if f["name"] == "alternator_lb"]
        plugin["name"] = plugin["root_id"] = "alternator_lb_next"
        plugin["vm_config"]["code"]["local"]["filename"] = str(next_wasm)
        assert plugin["vm_config"]["vm_id"] == wasm_plugin(config)["vm_config"]["vm_id"] == VM_ID
        listeners.append(new)
        return config

    # The Wasm log at debug: each VM names its shared-data key at start.
    old = proxied(edit_config=with_the_upgraded_module, envoy_args=["--component-log-level", "wasm:debug"],
                  refresh_interval_ms=300, load_balancing="round_robin")
    cluster, envoy = old.cluster, old.envoy
    upgraded = Proxied(cluster, envoy, f"http://127.0.0.1:{new_port}", old.interval_s, old.filter_keys)

    # Each version runs its own discovery (its own lease in its own record),
    # and every worker of each routes over the discovered nodes.
    for name in ("alternator_lb", "alternator_lb_next"):
        net.wait_for(lambda: logged_by(envoy.log_text(), name, "discovered 3 nodes"), timeout=10,
                     message=f"{name} to discover the nodes")
    for p in (old, upgraded):
        wait_routed(p, cluster.addresses)

    # Both route requests over the discovered nodes: 30 in a row from one
    # client, round robin, 10 on each node.
    create_table(dynamodb(old.endpoint), table_name)
    for p in (old, upgraded):
        [db] = Clients(p, lambda: dynamodb(p.endpoint), count=1, cover=False).clients
        since = time.monotonic()
        for i in range(30):
            db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": str(i)}})
        served_by = {a: 0 for a in cluster.addresses}
        for r in served(cluster, since, {"GetItem"}):
            served_by[r.node] += 1
        assert served_by == {a: 10 for a in cluster.addresses}, f"{p.endpoint}: {served_by}"
    # Several more rounds with both writing their records: five of each
    # (each version asks once per interval).
    since = time.monotonic()
    net.wait_for(lambda: len(cluster.localnodes_calls(since=since)) >= 10, timeout=20,
                 message="ten more /localnodes rounds")

    log = envoy.log_text()
    old_keys, new_keys = keys_logged(log, "alternator_lb"), keys_logged(log, "alternator_lb_next")
    assert len(old_keys) == 1 and len(new_keys) == 1, (old_keys, new_keys)
    [old_key], [new_key] = old_keys, new_keys
    # One discovery identity (the hash at the end), two format versions.
    assert old_key != new_key
    assert old_key.rsplit(".", 1)[1] == new_key.rsplit(".", 1)[1]
    assert f".v{NEXT_FORMAT}." in new_key and f".v{NEXT_FORMAT}." not in old_key
    assert "corrupt shared state" not in log, [ln for ln in log.splitlines() if "corrupt" in ln][:5]
    assert sum(cluster.signature_failures().values()) == 0
