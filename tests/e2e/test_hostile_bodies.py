"""Hostile request bodies cost Envoy little and delay no one (issue 18).

Measured on the filter before issue 18: with ``key_route_affinity: "rmw"``,
six UpdateItem / BatchWriteItem requests of gzip that inflate to 16 MiB of
junk members (``{"AttributeUpdates":{"":0,"":0,...}}``) grew Envoy's
resident memory from 105 to 417 MiB and held other clients' requests for
2.4-3.9 s: the filter inflated each body whole and kept every member it
read, and a Wasm VM's memory never shrinks. No credentials are needed to
send them: SigV4 is checked only at Alternator.

Now a held body is read as it streams, inflated a piece at a time, and
given up once a bound is reached (members looked at, inflated size, gzip
ratio): the bombs are sent on without affinity (the node answers them),
counted in ``affinity_body_unread``, and the targets of the issue hold:
Envoy's RSS grows at most 48 MiB after the six bombs, and no request of
another client sent meanwhile waits more than 1 s. These are bounds the
issue sets, measured within the test, not figures of this machine's speed.

Round robin is pinned: balancing is not the subject.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import net
from harness.proxy import create_table
from harness.traffic import dynamodb_error, listener_port, served, signed_headers

MIB = 1 << 20
BOMBS = 6
RSS_GROWTH_LIMIT_MIB = 48
WAIT_LIMIT_S = 1.0
BOMB_HEADER = "x-e2e-bomb"


def junk(member: str) -> bytes:
    """Up to 16 MiB of JSON (Alternator's request limit, which the filter
    read to before issue 18): one member holding an object of empty-named
    junk members, as the issue measured."""
    head = b'{"' + member.encode() + b'":{'
    count = (16 * MIB - len(head) - len(b'"":0}}')) // 5
    return head + b'"":0,' * count + b'"":0}}'


def vm_rss_mib(pid: int) -> float:
    """Envoy's resident memory now, from /proc (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class OtherClients:
    """Clients that are not the attacker: each on its own keep-alive
    connection, in a loop until stopped, a conditional PutItem (held for
    its key) then a GetItem, recording how long each request took."""

    def __init__(self, endpoint: str, table: str, count: int = 4):
        self.endpoint = endpoint
        self.table = table
        self.count = count
        self.waits: list[float] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def _request(self, conn: http.client.HTTPConnection, operation: str, doc: dict) -> None:
        body = json.dumps(doc).encode()
        start = time.monotonic()
        conn.request("POST", "/", body=body, headers=signed_headers(self.endpoint, operation, body))
        resp = conn.getresponse()
        data = resp.read()
        took = time.monotonic() - start
        with self._lock:
            self.waits.append(took)
            if resp.status != 200:
                self.failures.append(f"{operation}: {resp.status} {data[:200]!r}")

    def _run(self, i: int) -> None:
        host, port = self.endpoint.split("://", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            j = 0
            while not self._stop.is_set():
                key = {"pk": {"S": f"other{i}-{j % 7}"}, "sk": {"S": str(j)}}
                self._request(conn, "PutItem", {"TableName": self.table, "Item": key,
                                                "ConditionExpression": "attribute_not_exists(locked)"})
                self._request(conn, "GetItem", {"TableName": self.table, "Key": key})
                j += 1
        except Exception as e:  # noqa: BLE001 - a failure is a finding
            with self._lock:
                self.failures.append(f"client {i}: {e!r}")
        finally:
            conn.close()

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)


def send_bomb(endpoint: str, operation: str, body: bytes) -> tuple[int, bytes, float]:
    """One bomb on its own connection: status, answer, seconds taken."""
    host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        headers = signed_headers(endpoint, operation, body, {"Content-Encoding": "gzip", BOMB_HEADER: "1"})
        start = time.monotonic()
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - start
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["rmw", "any_write"])
def test_six_gzip_bombs_cost_envoy_little_and_delay_no_one(make_cluster, proxied, dynamodb, table_name, mode):
    cluster = make_cluster(n_nodes=3)
    create_table(dynamodb(cluster.endpoint(0)), table_name)
    p = proxied(cluster=cluster, key_route_affinity=mode, partition_keys={table_name: "pk"},
                load_balancing="round_robin", refresh_interval_ms=500)
    p.wait_discovered()
    # The node answers the bombs as Alternator would (junk is no request),
    # without passing them to the backend.
    cluster.set_request_hook(lambda r: dynamodb_error(message="junk")
                             if any(k.lower() == BOMB_HEADER for k, _ in r.headers) else None)
    update_bomb = gzip.compress(junk("AttributeUpdates"), compresslevel=9, mtime=0)
    batch_bomb = gzip.compress(junk("RequestItems"), compresslevel=9, mtime=0)
    print(f"\nbombs: {len(update_bomb)} and {len(batch_bomb)} bytes of gzip, each inflating to "
          f"{len(junk('RequestItems')) / MIB:.0f} MiB of junk members ({mode})")
    assert max(len(update_bomb), len(batch_bomb)) < 32 * 1024
    bombs = [("UpdateItem", update_bomb), ("BatchWriteItem", batch_bomb)] * (BOMBS // 2)
    stat = lambda name: p.envoy.stat("wasmcustom.alternator_lb." + name)  # noqa: E731

    with OtherClients(p.endpoint, table_name) as others:
        # Warm: every worker has served the others for a while.
        net.wait_for(lambda: len(others.waits) >= 200, timeout=30, message="the other clients to warm up")
        rss_before = vm_rss_mib(p.envoy.pid)
        warm_waits = len(others.waits)
        since = time.monotonic()
        with ThreadPoolExecutor(BOMBS) as pool:
            answers = list(pool.map(lambda b: send_bomb(p.endpoint, *b), bombs))
        bombs_took = time.monotonic() - since
        # The others go on a little after the bombs.
        time.sleep(0.5)
    rss_after = vm_rss_mib(p.envoy.pid)
    during = others.waits[warm_waits:]

    growth = rss_after - rss_before
    worst = max(during)
    print(f"Envoy RSS {rss_before:.1f} MiB before the bombs, {rss_after:.1f} MiB after "
          f"(+{growth:.1f} MiB, limit {RSS_GROWTH_LIMIT_MIB}); the bombs took "
          f"{', '.join(f'{a[2] * 1000:.0f}' for a in answers)} ms ({bombs_took * 1000:.0f} ms in all); "
          f"other clients' {len(during)} requests meanwhile: worst {worst * 1000:.0f} ms, "
          f"median {sorted(during)[len(during) // 2] * 1000:.1f} ms (limit {WAIT_LIMIT_S * 1000:.0f} ms)")
    assert others.failures == [], others.failures[:5]
    # Answered by the node, as sent: nothing lost.
    for status, body, _ in answers:
        assert status == 400 and b"ValidationException" in body, (status, body[:300])
    records = served(cluster, since, where=lambda r: any(k.lower() == BOMB_HEADER for k, _ in r.headers))
    assert sorted(r.operation for r in records) == sorted(op for op, _ in bombs), records
    assert all(r.body in (update_bomb, batch_bomb) for r in records)
    assert growth <= RSS_GROWTH_LIMIT_MIB, f"Envoy grew {growth:.1f} MiB"
    assert worst <= WAIT_LIMIT_S, f"a request of another client waited {worst:.2f} s"
    # The held bombs were given up and counted (under rmw a batch is never
    # held: it goes on at once, unread and uncounted); the others' writes
    # were routed by key.
    held_bombs = BOMBS // 2 if mode == "rmw" else BOMBS
    net.wait_for(lambda: stat("affinity_body_unread") == held_bombs, timeout=5,
                 message=f"{held_bombs} bodies counted as not read")
    assert stat("affinity_routed_by_key") > 0 and stat("affinity_fell_back") == 0, \
        p.envoy.stats("alternator_lb")
