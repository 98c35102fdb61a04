"""Routing through a real Envoy: SigV4 intact, DynamoDB operations
round-trip, requests handed to the chosen node (ORIGINAL_DST) in round
robin's exact spread, no client can pick the node, and the node's Server
header reaches the client.

Balancing is not the subject here: every test pins round robin, whose
spread is exact per worker (see harness.traffic.assert_round_robin); least
request is tested end to end in test_least_request.py."""

from __future__ import annotations

import time

import pytest

from harness.proxy import create_table
from harness.traffic import Clients, assert_round_robin, nodes_of, served

RR = {"load_balancing": "round_robin"}


def one_client(p, dynamodb):
    """A boto3 client on one connection, on a known worker."""
    return Clients(p, lambda: dynamodb(p.endpoint), count=1, cover=False).clients[0]


def test_crud_round_trips_through_the_proxy(proxied, dynamodb, table_name):
    p = proxied(**RR)
    p.wait_discovered()
    db = one_client(p, dynamodb)
    create_table(db, table_name)
    since = time.monotonic()
    db.put_item(TableName=table_name, Item={"pk": {"S": "user1"}, "sk": {"S": "a"}, "v": {"N": "1"}})
    db.put_item(TableName=table_name, Item={"pk": {"S": "user1"}, "sk": {"S": "b"}, "v": {"N": "2"}})
    got = db.get_item(TableName=table_name, Key={"pk": {"S": "user1"}, "sk": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"]["v"] == {"N": "1"}
    q = db.query(TableName=table_name, KeyConditionExpression="pk = :p",
                 ExpressionAttributeValues={":p": {"S": "user1"}})
    assert sorted(i["sk"]["S"] for i in q["Items"]) == ["a", "b"]
    db.delete_item(TableName=table_name, Key={"pk": {"S": "user1"}, "sk": {"S": "a"}})
    assert "Item" not in db.get_item(TableName=table_name, Key={"pk": {"S": "user1"}, "sk": {"S": "a"}})
    q = db.query(TableName=table_name, KeyConditionExpression="pk = :p",
                 ExpressionAttributeValues={":p": {"S": "user1"}})
    assert [i["sk"]["S"] for i in q["Items"]] == ["b"]
    # Those 7 operations went round robin over the 3 nodes (2 or 3 each), so
    # what one node wrote, another read back.
    records = served(p.cluster, since)
    assert len(records) == 7, nodes_of(records)
    assert_round_robin(records, p.cluster.addresses, "7 operations")
    assert sum(p.cluster.signature_failures().values()) == 0, p.cluster.signature_failure_reasons()[:3]


def test_sdk_requests_spread_exactly_and_all_signatures_verify(proxied, dynamodb, table_name):
    """Clients on both workers, each sending reads and writes in a loop:
    round robin gives each node k // 3 or k // 3 + 1 of a worker's k
    requests, and every signature verifies on the node that got it."""
    p = proxied(concurrency=2, **RR)
    p.wait_discovered()
    clients = Clients(p, lambda: dynamodb(p.endpoint), count=4)
    create_table(clients.clients[0], table_name)
    per_client = 150

    def work(db, t: int, i: int) -> None:
        if i % 2:
            db.put_item(TableName=table_name, Item={"pk": {"S": f"t{t}"}, "sk": {"S": str(i)}})
        else:
            db.get_item(TableName=table_name, Key={"pk": {"S": f"t{t}"}, "sk": {"S": str(i)}})

    since = clients.run(work, per_client)
    assert clients.errors == [], clients.errors[:5]
    records = served(p.cluster, since)
    total = per_client * len(clients.clients)
    print(f"\n{total} requests from {len(clients.clients)} clients on {sorted(set(clients.workers))}: "
          f"{nodes_of(records)}")
    assert len(records) == total
    assert_round_robin(records, p.cluster.addresses, f"{total} SDK requests")
    assert sum(p.cluster.signature_failures().values()) == 0, p.cluster.signature_failure_reasons()[:3]


def test_client_headers_cannot_choose_the_node(proxied, dynamodb, table_name):
    """A client naming a node in x-envoy-original-dst-host, or in Host, still
    gets its requests balanced over every node. The headers are signed, so
    the nodes accept them."""
    p = proxied(**RR)
    p.wait_discovered()
    target = f"{p.cluster.addresses[2]}:{p.cluster.port}"
    db = one_client(p, dynamodb)
    create_table(db, table_name)

    def steer(request, **_):
        request.headers["x-envoy-original-dst-host"] = target
        request.headers["Host"] = target

    db.meta.events.register("before-sign.dynamodb", steer)
    since = time.monotonic()
    for i in range(30):
        db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": str(i)}})
    records = served(p.cluster, since)
    # Steering would put all 30 on one node; round robin gives each 10.
    assert nodes_of(records) == {a: 10 for a in p.cluster.addresses}
    assert_round_robin(records, p.cluster.addresses, "steered requests")
    seen = {k.lower(): v for k, v in records[-1].headers}
    assert seen.get("x-envoy-original-dst-host") == target, "header should reach the node unchanged"
    assert seen.get("host") == target
    assert sum(p.cluster.signature_failures().values()) == 0


@pytest.mark.parametrize("server", [None, "ScyllaDB Alternator (test)"], ids=["absent", "set"])
def test_the_nodes_server_header_reaches_the_client_unchanged(proxied, dynamodb, table_name, server):
    """Alternator sends no Server header by default, or the one configured
    in alternator_http_response_server_header; through the proxy the client
    sees exactly that, not Envoy's "server: envoy"."""
    p = proxied(n_nodes=2, **RR)
    p.cluster.server_header = server
    p.wait_discovered()
    db = dynamodb(p.endpoint)
    create_table(db, table_name)
    answers = [db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": str(i)}})
               for i in range(4)]
    for answer in answers:
        headers = answer["ResponseMetadata"]["HTTPHeaders"]
        assert headers.get("server") == server, headers
