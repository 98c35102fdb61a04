"""A listener the filter shares with another service (``hosts``): one Envoy
listener, two virtual hosts, one to the Alternator ORIGINAL_DST cluster and
one to an unrelated STATIC backend. What Envoy decides here is which virtual
host a request takes and what reaches each backend; which requests the
filter takes is proven deterministically in core (model::authority,
stream's tests).

Balancing is not the subject: round robin is pinned."""

from __future__ import annotations

import json
import os
import time

import pytest

from harness import net
from harness.clients import sign_for_host
from harness.proxy import create_table
from harness.recording_server import SERVER, RecordingServer
from harness.traffic import (Clients, assert_round_robin, listener_port, nodes_of, send_raw, served,
                             signed_headers)

RR = {"load_balancing": "round_robin"}
#: The name applications use for Alternator: the only one in ``hosts``.
ALTERNATOR = "alternator.example"
#: Another service behind the same listener.
OTHER = "other.example"
#: A name the Alternator route also takes but ``hosts`` does not list (a
#: misconfiguration): its requests pass the filter and reach the ORIGINAL_DST
#: cluster with no node named.
UNLISTED = "unlisted.example"
S = "wasmcustom.alternator_lb."


@pytest.fixture
def other_service():
    with RecordingServer() as server:
        yield server


def shared_listener(other: RecordingServer):
    """envoy/envoy.yaml's listener with two virtual hosts: Alternator's
    (the shipped one, for its names only) and the other service's, which
    routes to a STATIC cluster of ``other``."""

    def edit(config: dict) -> dict:
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        vhosts = hcm["route_config"]["virtual_hosts"]
        [alternator] = vhosts
        alternator["domains"] = [ALTERNATOR, f"{ALTERNATOR}:*", UNLISTED, f"{UNLISTED}:*"]
        vhosts.append({"name": "other", "domains": [OTHER, f"{OTHER}:*"],
                       "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "other_service"}}]})
        config["static_resources"]["clusters"].append({
            "name": "other_service", "type": "STATIC", "connect_timeout": "1s",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": "other_service", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": other.address,
                                                             "port_value": other.port}}}}]}]},
        })
        return config

    return edit


def test_other_hosts_pass_untouched_and_alternators_requests_are_spread(
        proxied, dynamodb, table_name, other_service):
    p = proxied(hosts=[ALTERNATOR], edit_config=shared_listener(other_service), **RR)
    port = listener_port(p)
    p.authority = f"{ALTERNATOR}:{port}"
    p.wait_discovered()

    # Alternator's requests: boto3 clients on both workers, signing the
    # Alternator name they send; spread exactly, every signature verified.
    clients = Clients(p, lambda: sign_for_host(dynamodb(p.endpoint), p.authority), count=4)
    create_table(clients.clients[0], table_name)
    per_client = 45

    def work(db, t: int, i: int) -> None:
        if i % 2:
            db.put_item(TableName=table_name, Item={"pk": {"S": f"t{t}"}, "sk": {"S": str(i)}})
        else:
            db.get_item(TableName=table_name, Key={"pk": {"S": f"t{t}"}, "sk": {"S": str(i)}})

    since = clients.run(work, per_client)
    assert clients.errors == [], clients.errors[:5]
    records = served(p.cluster, since)
    total = per_client * len(clients.clients)
    print(f"\n{total} Alternator requests from {len(clients.clients)} clients: {nodes_of(records)}")
    assert len(records) == total
    assert_round_robin(records, p.cluster.addresses, f"{total} SDK requests for {ALTERNATOR}")
    assert {next(v for k, v in r.headers if k.lower() == "host") for r in records} == {p.authority}
    assert sum(p.cluster.signature_failures().values()) == 0, p.cluster.signature_failure_reasons()[:3]

    # The other host's requests: what the client sent is what its backend
    # gets, a DynamoDB-shaped write (the kind key route affinity holds)
    # included, and its answer comes back as the backend gave it.
    write = json.dumps({"TableName": table_name, "Item": {"pk": {"S": "x"}, "sk": {"S": "y"}},
                        "ConditionExpression": "attribute_not_exists(pk)"}).encode()
    signed = signed_headers(f"http://{OTHER}:{port}", "PutItem", write)
    other_requests = [
        ("GET", "/status?verbose=1", [("Host", f"{OTHER}:{port}"), ("X-Trace", "abc"),
                                      ("Accept", "*/*")], b""),
        ("POST", "/upload/blob", [("Host", OTHER), ("Content-Type", "application/octet-stream"),
                                  ("X-Amz-Target", "DynamoDB_20120810.PutItem")],
         os.urandom(200_000)),
        ("PUT", "/Mixed/Case", [("Host", "Other.Example"), ("Content-Type", "text/plain"),
                                ("X-Repeated", "one"), ("X-Repeated", "two")], b"hello\r\n"),
        ("POST", "/", list(signed.items()), write),
    ]
    other_since = time.monotonic()
    for method, path, headers, body in other_requests:
        status, answer_headers, answer = send_raw(port, method, path, headers, body)
        assert status == 200, (method, path, status, answer[:300])
        assert answer == f"other service: {method} {path}".encode()
        assert answer_headers.get("server") == SERVER
    received = other_service.received
    assert len(received) == len(other_requests), [(r.method, r.path) for r in received]
    for (method, path, headers, body), got in zip(other_requests, received):
        assert (got.method, got.path, got.body) == (method, path, body)
        sent = [(k.lower(), v) for k, v in headers]
        if body:
            sent.append(("content-length", str(len(body))))
        arrived = [(k.lower(), v) for k, v in got.headers]
        # Every header as sent, in order (Envoy writes Host first, from
        # :authority); Envoy adds only its own (the router's x-envoy-* are
        # suppressed in the shipped config).
        assert ("host", dict(sent)["host"]) in arrived, (sent, arrived)
        assert [h for h in arrived if h in sent and h[0] != "host"] == \
            [h for h in sent if h[0] != "host"], (sent, arrived)
        extra = {k for k, v in arrived if (k, v) not in sent}
        assert extra <= {"x-forwarded-proto", "x-request-id"}, extra
    assert served(p.cluster, other_since) == [], "no other-host request reached a node"

    # A name the Alternator route takes but hosts does not list: the filter
    # passes it, and the ORIGINAL_DST cluster, given no node, has nowhere to
    # send it: Envoy answers 503 itself, and no node sees it.
    none_healthy = p.envoy.stat("cluster.alternator.upstream_cx_none_healthy")
    unlisted_since = time.monotonic()
    status, _, answer = send_raw(port, "POST", "/", list(
        signed_headers(f"http://{UNLISTED}:{port}", "ListTables", b"{}").items()), b"{}")
    assert status == 503, answer[:300]
    assert p.envoy.stat("cluster.alternator.upstream_cx_none_healthy") == none_healthy + 1
    assert served(p.cluster, unlisted_since) == []
    assert other_service.received == received

    # Counted: every request a node got was routed; the other host's and
    # the unlisted one passed; nothing was refused, held or read.
    passed = len(other_requests) + 1
    routed = len(p.cluster.dynamodb_requests())

    def counted():
        stats = p.envoy.stats(filter="alternator_lb")
        return stats.get(S + "requests_passed") == passed and stats.get(S + "requests_routed") == routed \
            and stats

    stats = net.wait_for(counted, timeout=5, message=f"{passed} passed and {routed} routed counted")
    for name in ("requests_rejected_no_node", "requests_rejected_handoff_refused", "affinity_held",
                 "affinity_body_unread"):
        assert stats.get(S + name) == 0, (name, stats.get(S + name))
