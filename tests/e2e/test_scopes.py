"""Topology scopes through a real Envoy (issue 6): a cluster of two
datacenters with two racks each, seeds given per datacenter, and the routing
chain rack -> datacenter -> cluster. Traffic stays in the first scope that
has a healthy node and moves to the next one only when real nodes die
(Envoy's connection failures are what takes them out), with no error the
SDK does not absorb.

How each scope's lists are kept and chained is proven in the core
(discovery.rs: routing_falls_back_rack_dc_cluster_and_returns,
an_empty_answer_empties_its_scope_but_never_everything,
per_query_targets_prefer_the_same_datacenter; poller/tests.rs:
five_vms_poll_once_per_interval). Routing is judged from what the
simulated nodes served, per Envoy worker, never from log text; round robin
is pinned, so the spread within a scope is exact.
"""

from __future__ import annotations

import contextlib

from harness import net
from harness.proxy import Load, create_table
from harness.traffic import Clients, assert_round_robin, failed_answers, served, wait_served_by

TOPOLOGY = ([("dc1", "rack1")] * 2 + [("dc1", "rack2")] * 2
            + [("dc2", "rack1")] * 2 + [("dc2", "rack2")] * 2)
CHAIN = [{"dc": "dc1", "rack": "rack1"}, {"dc": "dc1"}, "cluster"]
FAST = {"refresh_interval_ms": 250, "down_probe_interval_ms": 300, "quarantine_probe_interval_ms": 200,
        "load_balancing": "round_robin"}


def get_items(table: str):
    def call(client, i, j):
        client.get_item(TableName=table, Key={"pk": {"S": f"probe{i}"}, "sk": {"S": str(j)}})
    return call


def route_to(p, clients: Clients, load: Load | None, table: str, nodes, what: str) -> None:
    """Lets the load run on through the change (20 more calls, each retried
    by the SDK as it needs), then, with the load paused so that the
    clients' reads are all each worker picks, waits until every worker sends
    GetItems only to ``nodes``, all of them, and checks that a further batch
    is round robin's exact spread over those nodes."""
    if load is not None:
        done = load.ok
        net.wait_for(lambda: load.ok >= done + 20, timeout=20, message=f"{what}: the load to go on")
    with load.paused() if load is not None else contextlib.nullcontext():
        # 8 reads per client, at least one client per worker: each worker
        # picks at least 8 times a batch, a whole turn of any scope's list
        # (the cluster scope lists all 8 nodes), so a node a worker still
        # holds shows.
        wait_served_by(p, clients, lambda: clients.run(get_items(table), 8), nodes,
                       run=len(p.cluster.addresses), operations={"GetItem"}, what=what)
        failed = failed_answers(p.envoy)
        since = clients.run(get_items(table), per_client=10)
        assert failed_answers(p.envoy) == failed and clients.intact(), \
            f"{what}: requests failed while routing was settled"
        records = served(p.cluster, since, {"GetItem"})
    total = 10 * len(clients.clients)
    assert len(records) == total, f"{what}: {len(records)} reads served, expected {total}"
    assert_round_robin(records, nodes, what)


def test_traffic_stays_in_its_rack_and_falls_back_rack_datacenter_cluster(make_cluster, proxied, dynamodb,
                                                                          table_name):
    cluster = make_cluster(topology=TOPOLOGY)
    a = cluster.addresses
    dc1_rack1, dc1_rack2, dc2 = a[0:2], a[2:4], a[4:8]
    # One seed per rack of each datacenter.
    p = proxied(cluster=cluster, seeds={"dc1": [a[0], a[2]], "dc2": [a[4], a[6]]}, routing=CHAIN, **FAST)
    db = dynamodb(p.endpoint)
    create_table(db, table_name)
    clients = Clients(p, lambda: dynamodb(p.endpoint))
    route_to(p, clients, None, table_name, dc1_rack1, "first scope: dc1/rack1")

    with Load(lambda: dynamodb(p.endpoint), table_name, threads=4) as load:
        # The rack's nodes die (still listed), one at a time: a worker takes
        # a dead node out at its own first failed connect, or on its next
        # tick once another worker has, so an SDK call meets a dead node at
        # most once per worker, twice here, within the SDK's four attempts.
        # (Two dying at once could cost one call four failed attempts when
        # Envoy's connection: close after a failed connect moves its retries
        # from worker to worker.)
        cluster.stop_node(dc1_rack1[0])
        route_to(p, clients, load, table_name, dc1_rack1[1:], "one node of dc1/rack1 dead: the other")
        # The rack scope has no healthy node: the datacenter scope takes over.
        cluster.stop_node(dc1_rack1[1])
        route_to(p, clients, load, table_name, dc1_rack2, "dc1/rack1 dead: dc1's other rack")
        cluster.stop_node(dc1_rack2[0])
        route_to(p, clients, load, table_name, dc1_rack2[1:], "one node of dc1/rack2 dead: the other")
        # The whole datacenter is dead: the cluster scope (dc1 and dc2 lists).
        cluster.stop_node(dc1_rack2[1])
        route_to(p, clients, load, table_name, dc2, "dc1 dead: the cluster scope, so dc2")
        # Back once their probes pass: the first scope again.
        for addr in dc1_rack1 + dc1_rack2:
            cluster.start_node(addr)
        route_to(p, clients, load, table_name, dc1_rack1, "dc1 back: dc1/rack1 again")
    assert load.ok > 0
    assert load.errors == [], load.errors[:5]
    assert clients.errors == [], clients.errors[:5]
    assert cluster.errors() == []
