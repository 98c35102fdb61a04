"""Topology scopes through a real Envoy (issue 6): a cluster of two
datacenters with two racks each, seeds given per datacenter, and the routing
chain rack -> datacenter -> cluster. Traffic stays in the first scope that
has a healthy node and moves to the next one only when the scope has none,
with no error the SDK does not absorb.

Empty scopes, nodes Alternator stops listing and the discovery rounds per
interval are proven in the core (discovery.rs, poller/tests.rs). Routing is
judged from what the simulated nodes served, never from log text.
"""

from __future__ import annotations

from harness.proxy import Load, create_table, start_proxied
from harness.traffic import Clients, item_key, nodes_of, served, settle, wait_served_by

TOPOLOGY = ([("dc1", "rack1")] * 2 + [("dc1", "rack2")] * 2
            + [("dc2", "rack1")] * 2 + [("dc2", "rack2")] * 2)
CHAIN = [{"dc": "dc1", "rack": "rack1"}, {"dc": "dc1"}, "cluster"]
FAST = {"refresh_interval_ms": 250, "down_probe_interval_ms": 300, "quarantine_probe_interval_ms": 200}


class TwoDatacenters:
    """The proxied cluster and its node groups by place."""

    def __init__(self, make_cluster, make_envoy, routing, **filter_keys):
        self.cluster = make_cluster(topology=TOPOLOGY)
        a = self.cluster.addresses
        self.dc1_rack1, self.dc1_rack2 = a[0:2], a[2:4]
        self.dc2 = a[4:8]
        self.dc_of = {addr: dc for addr, (dc, _) in zip(a, TOPOLOGY)}
        # One seed per rack of each datacenter.
        self.seeds = {"dc1": [a[0], a[2]], "dc2": [a[4], a[6]]}
        self.p = start_proxied(make_cluster, make_envoy, cluster=self.cluster, seeds=self.seeds,
                               routing=routing, **{**FAST, **filter_keys})


def get_items(table: str):
    def call(client, i, j):
        client.get_item(TableName=table, Key={"pk": {"S": f"probe{i}"}, "sk": {"S": str(j)}})
    return call


def is_probe(record) -> bool:
    """One of get_items' requests (not the background Load's)."""
    key = item_key(record, "pk")
    return key is not None and key[1].get("S", "").startswith("probe")


def route_to(t: TwoDatacenters, clients: Clients, table: str, nodes, what: str, per_client: int = 6) -> None:
    """Waits until GetItems go only to ``nodes``, all of them, then checks a
    further batch is spread over exactly those nodes."""
    wait_served_by(t.cluster, lambda: clients.run(get_items(table), per_client), nodes,
                   operations={"GetItem"}, what=what)
    settle(t.p)
    since = clients.run(get_items(table), per_client=10)
    probes = nodes_of(served(t.cluster, since, {"GetItem"}, where=is_probe))
    total = 10 * len(clients.clients)
    assert sum(probes.values()) == total, f"{what}: {probes}, expected {total} requests"
    # Spread: judged on every read (the background load's too), since each
    # worker's balancing is shared by all the connections it serves.
    got = nodes_of(served(t.cluster, since, {"GetItem"}))
    assert set(got) == set(nodes), f"{what}: {got}"
    fair = sum(got.values()) / len(nodes)
    assert all(n >= fair / 2 for n in got.values()), f"{what}: not spread over {sorted(nodes)}: {got}"


def test_traffic_stays_in_its_rack_and_falls_back_rack_datacenter_cluster(
        make_cluster, make_envoy, dynamodb, table_name):
    t = TwoDatacenters(make_cluster, make_envoy, CHAIN)
    db = dynamodb(t.p.endpoint)
    create_table(db, table_name)
    clients = Clients(t.p, lambda: dynamodb(t.p.endpoint))
    route_to(t, clients, table_name, t.dc1_rack1, "first scope: dc1/rack1")

    with Load(lambda: dynamodb(t.p.endpoint), table_name, threads=4) as load:
        # Both nodes of the rack die (still listed): the rack scope has no
        # healthy node, the datacenter scope takes over.
        for addr in t.dc1_rack1:
            t.cluster.stop_node(addr)
        route_to(t, clients, table_name, t.dc1_rack2, "dc1/rack1 dead: dc1's other rack")
        # The whole datacenter is dead: the cluster scope (dc1 and dc2 lists).
        for addr in t.dc1_rack2:
            t.cluster.stop_node(addr)
        route_to(t, clients, table_name, t.dc2, "dc1 dead: the cluster scope, so dc2")
        # Back once their probes pass: the first scope again.
        for addr in t.dc1_rack1 + t.dc1_rack2:
            t.cluster.start_node(addr)
        route_to(t, clients, table_name, t.dc1_rack1, "dc1 back: dc1/rack1 again")
    assert load.ok > 0
    assert load.errors == [], load.errors[:5]
    assert clients.errors == [], clients.errors[:5]
    assert t.cluster.errors() == []
