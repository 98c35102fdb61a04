"""TLS to Alternator (envoy/envoy-tls.yaml): the simulated nodes serve HTTPS
with certificates for their IP addresses from a CA made for the test; Envoy
must verify each node against that CA and against the node's own IP, for
requests and for the filter's /localnodes calls alike. Round robin is
pinned: the spread is exact (balancing is test_least_request.py's subject)."""
from __future__ import annotations

import time

from harness.filter_config import TLS_CONFIG, each_dict
from harness.proxy import create_table
from harness.tls import TestCA
from harness.traffic import Clients, assert_round_robin, nodes_of, served

RR = {"load_balancing": "round_robin"}


def use_ca(ca_file):
    """Points every trusted_ca of the config at the test CA."""
    def set_ca(node: dict) -> None:
        if "trusted_ca" in node:
            node["trusted_ca"] = {"filename": str(ca_file)}

    def edit(config: dict) -> dict:
        each_dict(config, set_ca)
        return config
    return edit


def tls_cluster(make_cluster, tmp_path, n_nodes, certificate_for):
    """A cluster whose node at index i presents certificate_for(i, address)."""
    contexts = {}
    cluster_box = {}

    def context(addr):
        if addr not in contexts:
            index = cluster_box["c"].addresses.index(addr)
            contexts[addr] = certificate_for(index, addr).server_context()
        return contexts[addr]

    cluster = make_cluster(n_nodes=n_nodes, tls=context)
    cluster_box["c"] = cluster
    return cluster


def test_requests_and_discovery_go_over_verified_tls(make_cluster, proxied, dynamodb, table_name, tmp_path):
    ca = TestCA(tmp_path / "ca", "alternator-test-ca")
    cluster = tls_cluster(make_cluster, tmp_path, 3, lambda i, addr: ca.issue([addr]))
    p = proxied(cluster=cluster, shipped=TLS_CONFIG, edit_config=use_ca(ca.ca_file),
                refresh_interval_ms=500, **RR)
    p.wait_discovered()
    [client] = Clients(p, lambda: dynamodb(p.endpoint), count=1, cover=False).clients
    create_table(client, table_name)
    since = time.monotonic()
    for i in range(60):
        client.put_item(TableName=table_name, Item={"pk": {"S": f"k{i}"}, "sk": {"S": "x"}})
    # One client, so one worker: 60 turns of its round robin, 20 per node,
    # each over a connection whose TLS verified.
    records = served(p.cluster, since)
    assert nodes_of(records) == {a: 20 for a in cluster.addresses}
    assert_round_robin(records, cluster.addresses, "60 writes")
    # Discovery itself went over TLS: the nodes answered /localnodes.
    assert len(cluster.localnodes_calls()) >= 1
    assert all(node.server.tls_refused == 0 for node in cluster.nodes)


def test_a_node_with_a_certificate_from_another_ca_is_refused(make_cluster, proxied, dynamodb,
                                                               table_name, tmp_path):
    ca = TestCA(tmp_path / "ca", "alternator-test-ca")
    rogue = TestCA(tmp_path / "rogue", "impostor-ca")

    def certificate(i, addr):
        # Node 2 is an impostor: the right IP, but not signed by the cluster's CA.
        return (rogue if i == 2 else ca).issue([addr])

    cluster = tls_cluster(make_cluster, tmp_path, 3, certificate)
    impostor = cluster.addresses[2]
    p = proxied(cluster=cluster, shipped=TLS_CONFIG, edit_config=use_ca(ca.ca_file),
                refresh_interval_ms=500, **RR)
    # Listed, but new nodes are probed before they take requests, and its
    # probe fails the handshake: the workers route over the other two.
    p.wait_discovered(nodes=[a for a in cluster.addresses if a != impostor], discovered=3)
    client = dynamodb(p.endpoint)   # SDK defaults: retries a 503
    create_table(client, table_name)
    for i in range(60):
        client.put_item(TableName=table_name, Item={"pk": {"S": f"k{i}"}, "sk": {"S": "x"}})
        assert client.get_item(TableName=table_name,
                               Key={"pk": {"S": f"k{i}"}, "sk": {"S": "x"}})["Item"]["pk"]["S"] == f"k{i}"
    counts = cluster.requests_per_node()
    assert counts.get(impostor, 0) == 0, counts           # no request reached it
    assert cluster.node(impostor).server.tls_refused >= 1  # Envoy did try, and refused it
    assert f"new node {impostor}:{cluster.port} failed its probe" in p.envoy.log_text()


def test_a_certificate_for_another_node_is_refused(make_cluster, proxied, dynamodb, table_name, tmp_path):
    """The right CA is not enough: the certificate must name the node's own IP
    (the filter hands Envoy that name with every request)."""
    ca = TestCA(tmp_path / "ca", "alternator-test-ca")
    names = {}

    def certificate(i, addr):
        # Node 1 presents node 0's certificate (same CA, wrong IP).
        return ca.issue([names[0]] if i == 1 else [addr])

    cluster = tls_cluster(make_cluster, tmp_path, 3, lambda i, addr: certificate(i, addr))
    names[0] = cluster.addresses[0]
    wrong = cluster.addresses[1]
    p = proxied(cluster=cluster, shipped=TLS_CONFIG, edit_config=use_ca(ca.ca_file),
                refresh_interval_ms=500, **RR)
    p.wait_discovered(nodes=[a for a in cluster.addresses if a != wrong], discovered=3)
    client = dynamodb(p.endpoint)
    create_table(client, table_name)
    for i in range(30):
        client.put_item(TableName=table_name, Item={"pk": {"S": f"k{i}"}, "sk": {"S": "x"}})
    counts = cluster.requests_per_node()
    assert counts.get(wrong, 0) == 0, counts
    assert cluster.node(wrong).server.tls_refused >= 1
