"""What the topology scope and key route affinity tests share: SDK clients
spread over every Envoy worker, "which node served it" from the simulated
cluster's records, and hand-built signed requests (gzip bodies, bodies sent
in two parts).

Routing is judged by what the nodes saw, never by the filter's log text:
a test sends a batch of requests and reads back, from
``cluster.dynamodb_requests(since=...)``, which node served each one.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import net
from .alternator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, DynamoRequest
from .clients import DEFAULT_REGION

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "DynamoDB_20120810."
MIB = 1 << 20


def listener_port(p) -> int:
    return int(p.endpoint.rsplit(":", 1)[1])


def tick(p) -> float:
    """How often each worker VM picks up the shared state (a tenth of the
    interval, within 20 ms .. 1 s)."""
    return min(max(p.interval_s / 10, 0.02), 1.0)


def settle(p) -> None:
    """Two ticks: every worker has picked up what the shared state says."""
    time.sleep(2 * tick(p) + 0.05)


def worker_connections(envoy, port: int) -> dict[str, int]:
    """Open downstream connections per Envoy worker on the listener."""
    stats = envoy.stats(filter=rf"^listener\.127\.0\.0\.1_{port}\.worker_[0-9]+\.downstream_cx_active$")
    return {name.split(".")[-2]: int(v) for name, v in stats.items()}


def upstream_active_requests(envoy, cluster_name: str = "alternator") -> int:
    """Requests Envoy has started towards any node and not finished."""
    status, body = envoy.admin_get("/clusters")
    assert status == 200, body[:200]
    total = 0
    for line in body.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster_name and parts[2] == "rq_active":
            total += int(parts[3])
    return total


class Clients:
    """``count`` (or more) boto3 clients, each on its own connection, such
    that every Envoy worker holds at least one of the connections: what one
    worker learns, the others must route by too.

    ``run(fn, per_client)`` calls ``fn(client, client_index, j)`` for ``j`` in
    ``range(per_client)`` in one thread per client; an exception is recorded
    in ``errors`` (what the application would see), not raised, so that a
    wait on routing cannot hide a failed SDK call.
    """

    def __init__(self, p, make_client: Callable[[], Any], count: int = 4, max_clients: int = 32):
        self.p = p
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.clients: list[Any] = []
        port = listener_port(p)
        workers = [f"worker_{i}" for i in range(p.envoy.concurrency)]
        while True:
            client = make_client()
            client.list_tables(Limit=1)   # opens this client's connection
            self.clients.append(client)
            conns = worker_connections(p.envoy, port)
            if len(self.clients) >= count and all(conns.get(w, 0) > 0 for w in workers):
                return
            if len(self.clients) >= max_clients:
                raise AssertionError(f"{max_clients} connections did not reach every worker: {conns}")

    def run(self, fn: Callable[[Any, int, int], Any], per_client: int = 1) -> float:
        """Runs the calls; returns the ``time.monotonic()`` taken before them."""
        since = time.monotonic()

        def work(i: int) -> None:
            for j in range(per_client):
                try:
                    fn(self.clients[i], i, j)
                except Exception as e:  # noqa: BLE001 - every failure is a finding
                    with self._lock:
                        self.errors.append(f"client {i} call {j}: {e!r}")

        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(work, range(len(self.clients))))
        return since


# -- which node served what ------------------------------------------------

def request_json(record: DynamoRequest) -> dict:
    """The JSON body of a recorded request (inflated if it was sent gzipped)."""
    body = record.body
    encoding = next((v for k, v in record.headers if k.lower() == "content-encoding"), "")
    if encoding.strip().lower() == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


def item_key(record: DynamoRequest, attr: str) -> tuple[str, dict] | None:
    """``(table, partition key AttributeValue)`` of a recorded single-item
    request (PutItem's ``Item``, Update/Delete/GetItem's ``Key``)."""
    try:
        doc = request_json(record)
    except (ValueError, OSError, EOFError):
        return None
    item = doc.get("Item") or doc.get("Key") or {}
    if attr not in item:
        return None
    return doc.get("TableName"), item[attr]


def served(cluster, since: float, operations: Iterable[str] | None = None,
           key: dict | None = None, attr: str = "pk", table: str | None = None,
           where: Callable[[DynamoRequest], bool] | None = None) -> list[DynamoRequest]:
    """Records since ``since``, optionally only of these operations, of one
    partition key value (and table), and those ``where`` accepts."""
    ops = set(operations) if operations is not None else None
    out = []
    for r in cluster.dynamodb_requests(since=since):
        if ops is not None and r.operation not in ops:
            continue
        if where is not None and not where(r):
            continue
        if key is not None:
            k = item_key(r, attr)
            if k is None or k[1] != key or (table is not None and k[0] != table):
                continue
        out.append(r)
    return out


def nodes_of(records: Iterable[DynamoRequest]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.node] = counts.get(r.node, 0) + 1
    return counts


def wait_served_by(cluster, send: Callable[[], float], expected: Iterable[str], *, cover: bool = True,
                   operations: Iterable[str] | None = None, where: Callable[[DynamoRequest], bool] | None = None,
                   timeout: float = 10.0, what: str = "routing") -> dict[str, int]:
    """Repeats ``send()`` (which returns its start time) until one whole
    batch was served only by ``expected`` nodes (and, with ``cover``, by
    every one of them); returns that batch's per-node counts."""
    expected = set(expected)
    last: dict[str, int] = {}

    def once():
        nonlocal last
        since = send()
        last = nodes_of(served(cluster, since, operations, where=where))
        return last and set(last) <= expected and (not cover or set(last) == expected) and last

    try:
        return net.wait_for(once, timeout=timeout, interval=0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: batches never went only to {sorted(expected)}; "
                             f"the last went to {last}") from None


# -- hand-built requests ------------------------------------------------------

def signed_headers(endpoint: str, operation: str, body: bytes, extra: dict[str, str] | None = None,
                   access_key: str = DEFAULT_ACCESS_KEY, secret_key: str = DEFAULT_SECRET_KEY) -> dict[str, str]:
    """Headers of a DynamoDB request to ``endpoint`` signed (SigV4) over
    ``body`` exactly as it will be sent (compressed, if it is)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Type": JSON_CONTENT_TYPE, "X-Amz-Target": TARGET_PREFIX + operation, **(extra or {})}
    request = AWSRequest("POST", endpoint + "/", data=body, headers=headers)
    SigV4Auth(Credentials(access_key, secret_key), "dynamodb", DEFAULT_REGION).add_auth(request)
    out = dict(request.headers.items())
    out["Host"] = endpoint.split("://", 1)[1]
    return out


def post(endpoint: str, operation: str, body: bytes, extra: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, bytes]:
    """One signed request on a fresh connection: ``(status, body)``."""
    host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", "/", body=body, headers=signed_headers(endpoint, operation, body, extra))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class SplitRequest:
    """A signed request whose body is sent in two parts, to see what Envoy
    does before the body is complete."""

    def __init__(self, endpoint: str, operation: str, body: bytes, first: int, timeout: float = 30.0):
        host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
        headers = signed_headers(endpoint, operation, body)
        headers["Content-Length"] = str(len(body))
        head = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.rest = body[first:]
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.sendall(head.encode() + body[:first])

    def finish(self) -> tuple[int, bytes]:
        try:
            self.sock.sendall(self.rest)
            resp = http.client.HTTPResponse(self.sock)
            resp.begin()
            return resp.status, resp.read()
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dynamodb_error(status: int = 400, type_: str = "ValidationException",
                   message: str = "Item size has exceeded the maximum allowed size"):
    """A request hook answer: a DynamoDB-style error, without relaying."""
    body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#" + type_, "message": message}).encode()
    return status, [("Content-Type", JSON_CONTENT_TYPE)], body
