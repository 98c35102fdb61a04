"""Tests of the e2e harness itself (no filter involved).

They prove that what the filter tests rely on is real: SigV4 verification
rejects exactly what Alternator would reject, the simulated nodes serve the
real AWS SDK over a shared backend, /localnodes honours dc/rack and the
failure modes, node kills look like real kills on the wire, and a signed
request survives a plain Envoy unchanged.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from harness import net, sigv4
from harness.alternator import BAD_ENTRIES, GARBAGE_BODY, LOCALNODES_MODES, SimulatedCluster
from harness.backend import MotoBackend
from harness.envoy import (EnvoyStartError, EnvoyProcess, minimal_static_config, on_free_ports,
                           run_envoy_expect_failure, validate, write_config)
from harness.proxy import create_table

AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


# ---------------------------------------------------------------- helpers

def sign(url: str, body: bytes, headers: dict[str, str] | None = None,
         access_key: str = AK, secret_key: str = SK, region: str = "us-east-1"):
    """Sign a POST with botocore's SigV4Auth; return (path, query, headers, body)
    as a server would receive them.  Host is set explicitly, as the HTTP
    client would send it."""
    parts = urlsplit(url)
    hdrs = {"Host": parts.netloc, "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.GetItem"}
    hdrs.update(headers or {})
    req = AWSRequest(method="POST", url=url, data=body, headers=hdrs)
    SigV4Auth(Credentials(access_key, secret_key), "dynamodb", region).add_auth(req)
    return parts.path or "/", parts.query, list(req.headers.items()), body


def replace_header(headers, name, value):
    return [(k, value if k.lower() == name.lower() else v) for k, v in headers]


def http_get(addr: str, port: int, path: str, timeout: float = 5.0):
    """GET on a fresh connection: (status, content type, raw body)."""
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        conn.close()


def localnodes(cluster: SimulatedCluster, addr: str, query: str = "") -> list:
    status, ctype, body = http_get(addr, cluster.port, "/localnodes" + (f"?{query}" if query else ""))
    assert status == 200 and ctype == "application/json"
    return json.loads(body)


# ---------------------------------------------------------------- sigv4

class TestSigV4:
    URL = "http://127.9.9.1:8000/"
    BODY = b'{"TableName":"t","Key":{"k":{"S":"x"}}}'

    def verify(self, path, query, headers, body, **kw):
        return sigv4.verify("POST", path, query, headers, body, {AK: SK}, **kw)

    def test_valid_signature(self):
        r = self.verify(*sign(self.URL, self.BODY))
        assert r.ok, r.reason
        assert r.access_key == AK
        assert "host" in r.signed_headers and "x-amz-target" in r.signed_headers

    def test_tampered_host_fails(self):
        path, q, h, b = sign(self.URL, self.BODY)
        r = self.verify(path, q, replace_header(h, "Host", "127.9.9.2:8000"), b)
        assert not r.ok and r.error_type == sigv4.INVALID_SIGNATURE
        assert r.reason == "signature mismatch"

    def test_tampered_body_fails(self):
        path, q, h, b = sign(self.URL, self.BODY)
        r = self.verify(path, q, h, b.replace(b'"x"', b'"y"'))
        assert not r.ok and r.reason == "signature mismatch"
        # Same JSON meaning, different bytes: still rejected.
        r = self.verify(path, q, h, json.dumps(json.loads(b)).encode())
        assert not r.ok

    def test_tampered_signed_header_fails(self):
        path, q, h, b = sign(self.URL, self.BODY)
        r = self.verify(path, q, replace_header(h, "X-Amz-Target", "DynamoDB_20120810.PutItem"), b)
        assert not r.ok and r.reason == "signature mismatch"

    def test_dropped_signed_header_fails(self):
        path, q, h, b = sign(self.URL, self.BODY)
        r = self.verify(path, q, [(k, v) for k, v in h if k.lower() != "x-amz-target"], b)
        assert not r.ok and r.reason == "signature mismatch"

    def test_added_unsigned_header_and_name_case_are_harmless(self):
        path, q, h, b = sign(self.URL, self.BODY)
        h = [(k.upper(), v) for k, v in h] + [("X-Request-Id", "abc"), ("X-Forwarded-Proto", "http")]
        assert self.verify(path, q, h, b).ok

    def test_whitespace_in_signed_header_values_is_canonicalized(self):
        path, q, h, b = sign(self.URL, self.BODY, {"X-Amz-Meta": "  a   b\tc  "})
        assert self.verify(path, q, h, b).ok
        # A proxy normalizing whitespace does not break the signature ...
        assert self.verify(path, q, replace_header(h, "X-Amz-Meta", "a b c"), b).ok
        # ... but changing the words does.
        assert not self.verify(path, q, replace_header(h, "X-Amz-Meta", "a bc"), b).ok

    def test_query_string(self):
        r = self.verify(*sign(self.URL + "?b=2&a=1&c=x%20y", self.BODY))
        assert r.ok, r.reason
        path, q, h, b = sign(self.URL + "?b=2&a=1", self.BODY)
        assert not self.verify(path, "a=1&b=3", h, b).ok

    def test_wrong_secret_and_unknown_key(self):
        r = self.verify(*sign(self.URL, self.BODY, secret_key="not-the-secret"))
        assert not r.ok and r.error_type == sigv4.INVALID_SIGNATURE
        r = self.verify(*sign(self.URL, self.BODY, access_key="NOBODY"))
        assert not r.ok and r.error_type == sigv4.UNRECOGNIZED_CLIENT

    def test_clock_skew_limit(self):
        path, q, h, b = sign(self.URL, self.BODY)
        signed_at = dict((k.lower(), v) for k, v in h)["x-amz-date"]
        t = dt.datetime.strptime(signed_at, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        assert self.verify(path, q, h, b, now=t + dt.timedelta(minutes=14)).ok
        assert self.verify(path, q, h, b, now=t - dt.timedelta(minutes=14)).ok
        late = self.verify(path, q, h, b, now=t + dt.timedelta(minutes=16))
        early = self.verify(path, q, h, b, now=t - dt.timedelta(minutes=16))
        assert not late.ok and "expired" in late.reason
        assert not early.ok and "expired" in early.reason

    def test_host_must_be_signed(self):
        path, q, h, b = sign(self.URL, self.BODY)
        auth = dict((k.lower(), v) for k, v in h)["authorization"]
        no_host = auth.replace("content-type;host;", "content-type;")
        assert no_host != auth
        r = self.verify(path, q, replace_header(h, "Authorization", no_host), b)
        assert not r.ok and "Host" in r.reason

    def test_missing_and_malformed_authorization(self):
        path, q, h, b = sign(self.URL, self.BODY)
        r = self.verify(path, q, [(k, v) for k, v in h if k.lower() != "authorization"], b)
        assert not r.ok and r.error_type == sigv4.MISSING_TOKEN
        for bad in ["Basic abc", "AWS4-HMAC-SHA256 Credential=x/y, Signature=00",
                    "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=zz"]:
            r = self.verify(path, q, replace_header(h, "Authorization", bad), b)
            assert not r.ok and r.reason.startswith("bad Authorization header"), bad

    def test_missing_signed_header_is_signed_as_empty(self):
        # Sign with an empty header value, then send the request without it.
        path, q, h, b = sign(self.URL, self.BODY, {"X-Empty": ""})
        assert "x-empty" in dict((k.lower(), v) for k, v in h)["authorization"]
        assert self.verify(path, q, [(k, v) for k, v in h if k.lower() != "x-empty"], b).ok

    def test_signature_is_compared_in_constant_time(self, monkeypatch):
        calls = []
        real = sigv4.hmac.compare_digest
        monkeypatch.setattr(sigv4.hmac, "compare_digest",
                            lambda a, b: calls.append(1) or real(a, b))
        assert self.verify(*sign(self.URL, self.BODY)).ok
        assert calls == [1]


# ---------------------------------------------------------------- net

def test_blocks_are_distinct_reserved_and_share_one_port():
    a = net.bind_common_port(4)
    b = net.bind_common_port(2)
    try:
        assert len(set(a.addresses)) == 4
        prefix = a.addresses[0].rsplit(".", 1)[0]
        assert a.addresses == [f"{prefix}.{i}" for i in range(1, 5)]
        assert 2 <= int(prefix.split(".")[1]) <= 254
        assert all(s.getsockname() == (addr, a.port) for s, addr in zip(a.sockets, a.addresses))
        assert a.block.prefix != b.block.prefix
        # The block is reserved: nobody else can lock it while we hold it.
        assert net._try_lock(a.block._lock_path) is None
        # Every address really listens.
        for addr in a.addresses:
            socket.create_connection((addr, a.port), timeout=2).close()
    finally:
        a.close()
        b.close()
    assert not os.path.exists(os.path.join(net.LOCK_DIR, prefix + ".lock"))
    addrs = net.loopback_block(3)
    assert len(set(addrs)) == 3 and all(x.startswith("127.") for x in addrs)
    p = net.free_port()
    socket.create_server(("127.0.0.1", p)).close()


def test_wait_for():
    box = []
    assert net.wait_for(lambda: box.append(1) or len(box) >= 3 and "done", timeout=2, interval=0) == "done"
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="never"):
        net.wait_for(lambda: 1 / 0, timeout=0.1, message="never")
    assert time.monotonic() - t0 < 1


# ---------------------------------------------------------------- nodes

def test_boto3_through_nodes_over_shared_backend(make_cluster, dynamodb, table_name):
    cluster = make_cluster(3)
    n1, n2, _ = cluster.addresses
    c1 = dynamodb(cluster.endpoint(n1))
    c2 = dynamodb(cluster.endpoint(n2))
    create_table(c1, table_name)
    c1.put_item(TableName=table_name, Item={"pk": {"S": "key1"}, "sk": {"S": "a"}, "v": {"N": "42"}})
    got = c1.get_item(TableName=table_name, Key={"pk": {"S": "key1"}, "sk": {"S": "a"}})
    assert got["Item"] == {"pk": {"S": "key1"}, "sk": {"S": "a"}, "v": {"N": "42"}}
    # Written through node 1, read through node 2: one shared backend.
    got = c2.get_item(TableName=table_name, Key={"pk": {"S": "key1"}, "sk": {"S": "a"}})
    assert got["Item"]["v"] == {"N": "42"}
    # boto3 checked the relayed x-amz-crc32 (it would raise otherwise).
    assert "x-amz-crc32" in got["ResponseMetadata"]["HTTPHeaders"]

    assert cluster.operations_per_node()[n1] == {"CreateTable": 1, "PutItem": 1, "GetItem": 1}
    assert cluster.operations_per_node()[n2] == {"GetItem": 1}
    assert cluster.requests_per_node() == {n1: 3, n2: 1, cluster.addresses[2]: 0}
    assert sum(cluster.signature_failures().values()) == 0
    headers = dict((k.lower(), v) for k, v in cluster.last_request_headers(n2))
    assert headers["host"] == f"{n2}:{cluster.port}"
    assert headers["x-amz-target"] == "DynamoDB_20120810.GetItem"
    ops = [(r.node, r.operation, r.status) for r in cluster.dynamodb_requests()]
    assert ops == [(n1, "CreateTable", 200), (n1, "PutItem", 200), (n1, "GetItem", 200),
                   (n2, "GetItem", 200)]
    cluster.reset_counters()
    assert cluster.total_requests() == 0 and cluster.dynamodb_requests() == []
    assert cluster.errors() == []


def test_wrong_secret_is_rejected_and_counted(make_cluster, dynamodb):
    cluster = make_cluster(2)
    node = cluster.addresses[1]
    bad = dynamodb(cluster.endpoint(node), secret_key="wrong-secret")
    with pytest.raises(ClientError) as e:
        bad.list_tables()
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] == "InvalidSignatureException"
    # Not retried by the SDK: exactly one failure, and nothing reached moto.
    assert cluster.signature_failures() == {cluster.addresses[0]: 0, node: 1}
    assert cluster.total_requests() == 0
    [(_, addr, reason)] = cluster.signature_failure_reasons()
    assert addr == node and reason == "signature mismatch"

    with pytest.raises(ClientError) as e:
        dynamodb(cluster.endpoint(node), access_key="stranger").list_tables()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert cluster.signature_failures()[node] == 2


def test_node_checks_headers_as_received(make_cluster):
    """A request re-sent with one signed header changed is rejected."""
    cluster = make_cluster(1)
    addr = cluster.addresses[0]
    url = cluster.endpoint(addr) + "/"
    for tamper, expect in [(None, 200), ("X-Amz-Target", 400), ("Host", 400)]:
        path, _, headers, body = sign(url, b"{}", {"X-Amz-Target": "DynamoDB_20120810.ListTables"},
                                      access_key=cluster.access_key, secret_key=cluster.secret_key)
        if tamper == "X-Amz-Target":
            headers = replace_header(headers, tamper, "DynamoDB_20120810.ListGlobalTables")
        elif tamper == "Host":
            headers = replace_header(headers, tamper, f"localhost:{cluster.port}")
        conn = http.client.HTTPConnection(addr, cluster.port, timeout=5)
        conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = json.loads(r.read())
        conn.close()
        assert r.status == expect, (tamper, data)
        if expect == 400:
            assert data["__type"].endswith("#InvalidSignatureException")
    assert cluster.signature_failures()[addr] == 2
    assert cluster.requests_per_node()[addr] == 1


def test_health_check(make_cluster):
    cluster = make_cluster(1)
    addr = cluster.addresses[0]
    status, _, body = http_get(addr, cluster.port, "/")
    assert status == 200 and body == f"healthy: {addr}:{cluster.port}".encode()


def test_localnodes_honours_dc_and_rack(make_cluster):
    topo = [("dc1", "rack1"), ("dc1", "rack1"), ("dc1", "rack2"),
            ("dc2", "rack1"), ("dc2", "rack2"), ("dc2", "rack2")]
    cluster = make_cluster(topology=topo)
    a = cluster.addresses
    dc1, dc2 = set(a[:3]), set(a[3:])
    t0 = time.monotonic()
    assert set(localnodes(cluster, a[0])) == dc1          # the asked node's dc
    assert set(localnodes(cluster, a[4])) == dc2
    assert set(localnodes(cluster, a[0], "dc=dc2")) == dc2
    assert set(localnodes(cluster, a[0], "rack=rack2")) == {a[2]}   # rack in own dc
    assert set(localnodes(cluster, a[3], "rack=rack2")) == {a[4], a[5]}
    assert set(localnodes(cluster, a[0], "dc=dc2&rack=rack1")) == {a[3]}
    assert localnodes(cluster, a[0], "dc=nowhere") == []
    assert localnodes(cluster, a[0], "rack=nowhere") == []
    assert localnodes(cluster, a[0], "dc=dc1&rack=nowhere") == []
    # Bare IP strings, no port.
    assert all(isinstance(x, str) and ":" not in x for x in localnodes(cluster, a[1]))

    calls = cluster.localnodes_calls(since=t0)
    assert len(calls) == 10
    assert calls[2][1] == a[0] and calls[2][2] == {"dc": "dc2"}
    assert calls[5][2] == {"dc": "dc2", "rack": "rack1"}
    assert all(c[0] >= t0 for c in calls)
    assert cluster.localnodes_calls(since=time.monotonic()) == []

    # Arbitrary order: shuffled on each answer.
    orders = {tuple(localnodes(cluster, a[0])) for _ in range(20)}
    assert len(orders) > 1


def test_membership_control(make_cluster, dynamodb, table_name):
    cluster = make_cluster(3)
    a0, a1, a2 = cluster.addresses
    cluster.remove_node(a1)
    assert set(localnodes(cluster, a0)) == {a0, a2}
    # An unlisted node keeps serving.
    assert http_get(a1, cluster.port, "/")[0] == 200
    cluster.list_node(a1)
    assert set(localnodes(cluster, a2)) == {a0, a1, a2}

    new = cluster.add_node()
    assert new.rsplit(".", 1)[0] == a0.rsplit(".", 1)[0] and new not in (a0, a1, a2)
    assert set(localnodes(cluster, new)) == {a0, a1, a2, new}
    client = dynamodb(cluster.endpoint(new))
    create_table(client, table_name)
    assert cluster.requests_per_node()[new] == 1

    other = cluster.add_node(dc="dc9", rack="r7")
    assert localnodes(cluster, other) == [other]
    assert localnodes(cluster, a0, "dc=dc9&rack=r7") == [other]
    assert other not in localnodes(cluster, a0)
    cluster.unlist_node(other)
    assert localnodes(cluster, a0, "dc=dc9") == []


def test_stop_node_refuses_and_resets_then_start_restores(make_cluster):
    cluster = make_cluster(2)
    victim, other = cluster.addresses
    port = cluster.port

    # An idle keep-alive connection that already served a request.
    idle = socket.create_connection((victim, port), timeout=5)
    idle.sendall(f"GET / HTTP/1.1\r\nHost: {victim}:{port}\r\n\r\n".encode())
    expected_end = f"healthy: {victim}:{port}".encode()
    got = b""
    while not got.endswith(expected_end):
        got += idle.recv(4096)
    assert got.startswith(b"HTTP/1.1 200")

    # An in-flight request: /localnodes made slow.
    cluster.set_localnodes_mode(victim, "slow", delay=30)
    inflight = socket.create_connection((victim, port), timeout=10)
    inflight.sendall(f"GET /localnodes HTTP/1.1\r\nHost: {victim}:{port}\r\n\r\n".encode())
    net.wait_for(lambda: cluster.localnodes_calls(), timeout=5, message="slow request to arrive")

    t0 = time.monotonic()
    cluster.stop_node(victim)
    assert time.monotonic() - t0 < 2
    with pytest.raises(ConnectionResetError):
        inflight.recv(4096)          # reset, not a response and not a clean close
    with pytest.raises(ConnectionResetError):
        idle.recv(4096)
    inflight.close()
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((victim, port), timeout=2)
    assert not cluster.node(victim).running
    # Still listed: stopping is not decommissioning.
    assert victim in localnodes(cluster, other)

    cluster.set_localnodes_mode(victim, "normal")
    cluster.start_node(victim)
    assert cluster.node(victim).running
    assert http_get(victim, port, "/") == (200, "text/plain; charset=utf-8",
                                           f"healthy: {victim}:{port}".encode())
    assert set(localnodes(cluster, victim)) == {victim, other}
    assert cluster.errors() == []


def test_stop_node_resets_inflight_dynamodb_request(make_cluster):
    """A request being served when the node dies gets a reset, no answer."""
    cluster = make_cluster(1)
    addr, port = cluster.addresses[0], cluster.port
    arrived, release = threading.Event(), threading.Event()

    def hook(req):
        arrived.set()
        release.wait(10)

    cluster.set_request_hook(hook)
    path, _, headers, body = sign(cluster.endpoint(addr) + "/", b"{}",
                                  {"X-Amz-Target": "DynamoDB_20120810.ListTables"},
                                  access_key=cluster.access_key, secret_key=cluster.secret_key)
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers)
    s = socket.create_connection((addr, port), timeout=10)
    s.sendall(f"POST {path} HTTP/1.1\r\n{raw}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert arrived.wait(5)
    cluster.stop_node(addr)          # returns although the hook still holds the request
    release.set()
    with pytest.raises(ConnectionResetError):
        s.recv(4096)
    s.close()
    assert cluster.requests_per_node()[addr] == 1


def test_drop_next_requests_ends_connections_unanswered_then_serves(make_cluster):
    """A node told to drop requests reads each whole and ends its connection
    without a byte of answer (RST or FIN), answers GET meanwhile, and serves
    normally once the count is spent."""
    cluster = make_cluster(1)
    addr, port = cluster.addresses[0], cluster.port
    path, _, headers, body = sign(cluster.endpoint(addr) + "/", b"{}",
                                  {"X-Amz-Target": "DynamoDB_20120810.ListTables"},
                                  access_key=cluster.access_key, secret_key=cluster.secret_key)
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers)
    request = f"POST {path} HTTP/1.1\r\n{raw}Content-Length: {len(body)}\r\n\r\n".encode() + body

    def post_on_new_connection():
        s = socket.create_connection((addr, port), timeout=10)
        try:
            s.sendall(request)
            return s.recv(4096)
        finally:
            s.close()

    cluster.drop_next_requests(addr, 1, how="reset")
    with pytest.raises(ConnectionResetError):
        post_on_new_connection()
    cluster.drop_next_requests(addr, 2, how="close")
    # Probes still pass while requests are dropped.
    assert http_get(addr, port, "/")[0] == 200
    assert post_on_new_connection() == b""      # FIN, no answer
    assert post_on_new_connection() == b""
    assert post_on_new_connection().startswith(b"HTTP/1.1 200")
    assert cluster.dropped_requests() == {addr: 3}
    assert cluster.requests_per_node() == {addr: 1}, "dropped requests are not served"
    with pytest.raises(ValueError):
        cluster.drop_next_requests(addr, 1, how="bogus")
    assert cluster.errors() == []


def test_answer_delays_fixed_jitter_spikes_seeded(make_cluster, dynamodb):
    """set_answer_delay delays DynamoDB answers only (never GET / or
    /localnodes): by a fixed delay, a uniform jitter, or a spike with some
    probability; each answer's delay is in its record, and the same seed
    gives the same delays to the same requests."""
    cluster = make_cluster(3, delay_seed=7)
    fixed, jittery, spiky = cluster.addresses
    cluster.set_answer_delay(fixed, 0.05)
    cluster.set_answer_delay(jittery, jitter=(0.002, 0.004))
    cluster.set_answer_delay(spiky, 0.001, spike_probability=0.5, spike_delay=0.03)
    clients = {a: dynamodb(cluster.endpoint(a)) for a in cluster.addresses}

    def timed_calls(addr, n):
        took = []
        for _ in range(n):
            t0 = time.monotonic()
            clients[addr].list_tables(Limit=1)
            took.append(time.monotonic() - t0)
        return took

    def delays(addr, since):
        return [(r.delay, r.spike) for r in cluster.dynamodb_requests(since=since) if r.node == addr]

    for a in cluster.addresses:     # connections open, so the timing below is the answer's
        timed_calls(a, 1)
    since = time.monotonic()
    took = {a: timed_calls(a, 20) for a in cluster.addresses}
    assert all(t >= 0.05 for t in took[fixed])
    assert delays(fixed, since) == [(0.05, False)] * 20
    d = delays(jittery, since)
    assert all(0.002 <= x < 0.004 and not spike for x, spike in d) and len({x for x, _ in d}) == 20
    assert all(t >= x for t, (x, _) in zip(took[jittery], d))
    d = delays(spiky, since)
    assert {x for x, spike in d if spike} == {0.031} and {x for x, spike in d if not spike} == {0.001}
    assert 3 <= sum(spike for _, spike in d) <= 17, d
    assert all(t >= x for t, (x, _) in zip(took[spiky], d))
    # Probes and /localnodes are never delayed, even on the slowest node.
    t0 = time.monotonic()
    assert http_get(fixed, cluster.port, "/")[0] == 200
    assert set(localnodes(cluster, fixed)) == set(cluster.addresses)
    assert time.monotonic() - t0 < 0.05

    # The same seed, the same requests in the same order: the same delays.
    def draws():
        cluster.seed_answer_delays(11)
        since = time.monotonic()
        for a in (jittery, spiky, jittery, spiky, spiky, jittery):
            clients[a].list_tables(Limit=1)
        return [(r.node, r.delay, r.spike) for r in cluster.dynamodb_requests(since=since)]

    first = draws()
    assert draws() == first and len(first) == 6

    # None: every node and those added later; 0: prompt again.
    cluster.set_answer_delay(None, 0.02)
    added = cluster.add_node()
    assert cluster.node(added).answer_delay == 0.02 and cluster.node(jittery).answer_jitter == (0, 0)
    cluster.set_answer_delay(None, 0)
    since = time.monotonic()
    timed_calls(fixed, 1)
    assert delays(fixed, since) == [(0.0, False)]
    for bad in ({"seconds": -1}, {"jitter": (0.003, 0.001)}, {"spike_probability": 1.5}):
        with pytest.raises(ValueError):
            cluster.set_answer_delay(fixed, **bad)
    assert cluster.errors() == []


def test_localnodes_modes(make_cluster):
    cluster = make_cluster(3)
    a0, a1, a2 = cluster.addresses
    port = cluster.port

    cluster.set_localnodes_mode(a0, "garbage")
    status, ctype, body = http_get(a0, port, "/localnodes")
    assert status == 200 and body == GARBAGE_BODY
    with pytest.raises(ValueError):
        json.loads(body)
    assert set(localnodes(cluster, a1)) == {a0, a1, a2}    # other nodes unaffected

    cluster.set_localnodes_mode(a0, "error")
    assert http_get(a0, port, "/localnodes")[0] == 500

    cluster.set_localnodes_mode(a0, "empty")
    assert localnodes(cluster, a0) == []

    cluster.set_localnodes_mode(a0, "not_array")
    status, _, body = http_get(a0, port, "/localnodes")
    assert status == 200 and isinstance(json.loads(body), dict)

    cluster.set_localnodes_mode(a0, "bad_entries")
    entries = localnodes(cluster, a0)
    assert {e for e in entries if isinstance(e, str) and e.count(".") == 3
            and all(p.isdigit() and int(p) < 256 for p in e.split("."))} == {a0, a1, a2}
    assert len(entries) == 3 + len(BAD_ENTRIES)
    assert any(not isinstance(e, str) for e in entries)

    cluster.set_localnodes_mode(a0, "slow", delay=0.3)
    t0 = time.monotonic()
    assert set(localnodes(cluster, a0)) == {a0, a1, a2}
    assert time.monotonic() - t0 >= 0.3

    cluster.set_localnodes_mode(None, "error")             # all nodes ...
    assert all(http_get(a, port, "/localnodes")[0] == 500 for a in cluster.addresses)
    added = cluster.add_node()                              # ... and later ones
    assert http_get(added, port, "/localnodes")[0] == 500
    cluster.set_localnodes_mode(None, "normal")
    assert set(localnodes(cluster, a2)) == {a0, a1, a2, added}
    with pytest.raises(ValueError):
        cluster.set_localnodes_mode(a0, "bogus")
    assert set(LOCALNODES_MODES) == {"normal", "garbage", "error", "empty", "slow",
                                     "bad_entries", "not_array"}


def test_request_hook_and_sdk_retry(make_cluster, dynamodb):
    """A hook can inspect requests and answer instead of the backend; the
    SDK (default retry settings) retries a 500 on the same endpoint."""
    cluster = make_cluster(1)
    addr = cluster.addresses[0]
    seen = []

    def hook(req):
        seen.append((req.operation, dict((k.lower(), v) for k, v in req.headers)["amz-sdk-request"]))
        if len(seen) == 1:
            return 500, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(
                {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                 "message": "injected"}).encode()
        return None

    cluster.set_request_hook(hook)
    resp = dynamodb(cluster.endpoint(addr)).list_tables()
    assert resp["ResponseMetadata"]["RetryAttempts"] == 1
    assert [op for op, _ in seen] == ["ListTables", "ListTables"]
    # botocore's standard retry mode: 4 attempts for DynamoDB; retries carry a ttl.
    assert "attempt=1; max=4" in seen[0][1] and "attempt=2; max=4" in seen[1][1]
    assert [r.status for r in cluster.dynamodb_requests()] == [500, 200]
    assert cluster.requests_per_node()[addr] == 2


def test_moto_backend_is_stopped_by_pid(tmp_path):
    be = MotoBackend(log_dir=tmp_path).start()
    pid = be.pid
    os.kill(pid, 0)                  # alive
    be.stop()
    be.stop()                        # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---------------------------------------------------------------- envoy

def test_a_port_taken_before_envoy_binds_it_is_chosen_again(make_envoy):
    """on_free_ports: Envoy refuses to start on a port another socket took
    since it was chosen, and the start is made again on new ports."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1]]
    try:
        def start():
            listener = ports[-1] if len(ports) == 1 else net.free_port()
            ports.append(listener)
            return make_envoy(minimal_static_config(listener, net.free_port(), ["127.0.0.1"], 9))

        envoy = on_free_ports(start)
    finally:
        taken.close()
    assert len(ports) == 3 and ports[1] == ports[0] != ports[2], ports
    assert envoy.is_running()


def test_sigv4_survives_plain_envoy(make_cluster, make_envoy, dynamodb, table_name):
    cluster = make_cluster(3)

    def start():
        listener = net.free_port()
        return make_envoy(minimal_static_config(listener, net.free_port(), cluster.addresses, cluster.port)), listener

    envoy, listener = on_free_ports(start)
    client = dynamodb(f"http://127.0.0.1:{listener}")

    create_table(client, table_name)
    for i in range(12):
        client.put_item(TableName=table_name, Item={"pk": {"S": f"k{i}"}, "sk": {"S": "a"}, "v": {"S": "x" * i}})
    for i in range(12):
        got = client.get_item(TableName=table_name, Key={"pk": {"S": f"k{i}"}, "sk": {"S": "a"}})
        assert got["Item"]["v"] == {"S": "x" * i}

    per_node = cluster.requests_per_node()
    assert sum(per_node.values()) == 25
    assert sum(cluster.signature_failures().values()) == 0, cluster.signature_failure_reasons()
    assert sum(1 for n in per_node.values() if n > 0) >= 2     # round robin spread them
    stats = envoy.stats()
    assert stats["cluster.alternator.upstream_rq_total"] == 25
    assert stats["cluster.alternator.upstream_rq_200"] == 25
    assert stats["http.ingress.downstream_rq_total"] == 25

    # Host arrives exactly as the SDK signed it; Envoy adds unsigned headers.
    req = cluster.dynamodb_requests()[-1]
    headers = dict((k.lower(), v) for k, v in req.headers)
    assert headers["host"] == f"127.0.0.1:{listener}"
    assert {"x-request-id", "x-forwarded-proto"} <= headers.keys()
    assert req.operation == "GetItem" and json.loads(req.body)["TableName"] == table_name
    assert cluster.errors() == []

    pid = envoy.pid
    assert envoy.stop() is not None
    assert envoy.stop() is not None                    # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_envoy_refuses_bad_config(tmp_path):
    good = minimal_static_config(net.free_port(), net.free_port(), ["127.0.0.1"], 9)
    ok, out = validate(write_config(good, tmp_path / "good.yaml"))
    assert ok, out

    bad = json.loads(json.dumps(good))
    bad["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    ok, out = validate(write_config(bad, tmp_path / "bad.yaml"))
    assert not ok and "NOT_A_TYPE" in out

    code, log = run_envoy_expect_failure(bad, timeout=10, workdir=tmp_path / "run")
    assert code not in (0, None) and "NOT_A_TYPE" in log

    with pytest.raises(EnvoyStartError, match="NOT_A_TYPE"):
        EnvoyProcess(bad, workdir=tmp_path / "start")

    # A good config is not "refused": it is still up at the timeout.
    code, _ = run_envoy_expect_failure(good, timeout=0.5, workdir=tmp_path / "good-run")
    assert code is None


def test_make_envoy_failure_is_cleaned_up(make_envoy):
    """A config Envoy refuses raises, with the log tail in the message."""
    cfg = minimal_static_config(net.free_port(), net.free_port(), ["127.0.0.1"], 9)
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "not-an-ip"
    with pytest.raises(EnvoyStartError, match="not-an-ip"):
        make_envoy(cfg)


def test_threads_do_not_leak(backend):
    before = threading.active_count()
    with SimulatedCluster(backend.url, n_nodes=3) as c:
        for a in c.addresses:
            http_get(a, c.port, "/")
    net.wait_for(lambda: threading.active_count() <= before, timeout=5,
                 message="node threads to end")
