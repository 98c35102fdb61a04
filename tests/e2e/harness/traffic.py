"""Traffic through the proxy, and which node served it: SDK clients spread
over every Envoy worker and known to be on a given one, "which node served
it" from the simulated cluster's records, round robin's exact spread per
worker, and hand-built signed requests (gzip bodies, bodies sent in two
parts).

Routing is judged by what the nodes saw, never by the filter's log text:
a test sends a batch of requests and reads back, from
``cluster.dynamodb_requests(since=...)``, which node served each one.

Which worker picked a request
-----------------------------
Each Envoy worker runs its own VM with its own picker, so what a test can
state exactly is per worker. A client opens its connection alone (no other
connection to the listener is opened meanwhile), and the worker whose
``listener...worker_N.downstream_cx_total`` grew by one took it (see
:func:`on_new_connection`); every request of the client then carries the
header ``x-e2e-client: worker_N/<index>``, which the node records with the
request (:func:`worker_of`). A keep-alive connection stays on its worker
until Envoy ends it (``connection: close``, after some of its own 503s);
:meth:`Clients.intact` and ``WorkerConnections.lost`` tell, and the clients
are then placed again.
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
#: The header naming the client (and so the worker) of a request.
CLIENT_HEADER = "x-e2e-client"
#: Its value on a client's first request, before its worker is known.
UNATTRIBUTED = "unattributed"


def listener_port(p) -> int:
    return int(p.endpoint.rsplit(":", 1)[1])


def worker_names(envoy) -> list[str]:
    return [f"worker_{i}" for i in range(envoy.concurrency)]


def worker_connections(envoy, port: int, stat: str = "downstream_cx_active") -> dict[str, int]:
    """A per-worker stat of the listener (by default its open downstream
    connections), by worker name."""
    stats = envoy.stats(filter=rf"^listener\.127\.0\.0\.1_{port}\.worker_[0-9]+\.{stat}$")
    return {name.split(".")[-2]: int(v) for name, v in stats.items()}


def on_new_connection(envoy, port: int, open_one: Callable[[], Any]) -> str | None:
    """Runs ``open_one()``, which opens one new connection to the listener
    and completes a request on it, and returns the worker that accepted it:
    the only one whose ``downstream_cx_total`` grew, by exactly one. None
    when that is not clear (another connection was opened meanwhile)."""
    before = worker_connections(envoy, port, "downstream_cx_total")
    open_one()
    after = worker_connections(envoy, port, "downstream_cx_total")
    grew = {w: n - before.get(w, 0) for w, n in after.items() if n != before.get(w, 0)}
    if len(grew) == 1 and list(grew.values()) == [1]:
        return next(iter(grew))
    return None


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


def _tag_requests(client, tag: dict) -> None:
    """Every request of the boto3 ``client`` carries ``CLIENT_HEADER:
    tag["value"]`` (signed with the rest: the nodes verify it)."""
    def add(request, **_):
        request.headers[CLIENT_HEADER] = tag["value"]
    client.meta.events.register("before-sign.dynamodb", add)


class Clients:
    """``count`` (or more) boto3 clients, each on its own connection, each
    known to be on a given Envoy worker (``workers[i]``), with every worker
    holding at least one of them when ``cover`` (what one worker learns, the
    others must route by too). No other connection to the listener may be
    opened while they are made.

    A placement holds while the connections do. Envoy ends a client's
    connection after some of its 503s (``connection: close``, seen after a
    failed connect to a node that died), and the SDK's next request then
    opens one that any worker may take. :meth:`intact` tells whether a new
    connection was opened since the clients were placed (by anyone: so only
    while nothing else connects), :meth:`place_again` reconnects and places
    them all.

    ``run(fn, per_client)`` calls ``fn(client, client_index, j)`` for ``j`` in
    ``range(per_client)`` in one thread per client; an exception is recorded
    in ``errors`` (what the application would see), not raised, so that a
    wait on routing cannot hide a failed SDK call.
    """

    def __init__(self, p, make_client: Callable[[], Any], count: int = 4, cover: bool = True,
                 max_clients: int = 32):
        self.p = p
        self.make_client = make_client
        self.count = count
        self.cover = cover
        self.max_clients = max_clients
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.clients: list[Any] = []
        self.workers: list[str] = []
        self._tags: list[dict] = []
        self._port = listener_port(p)
        self._placed_at: dict[str, int] = {}
        self._place(reuse=[])

    def _place_one(self, client, tag: dict) -> str | None:
        tag["value"] = UNATTRIBUTED
        worker = on_new_connection(self.p.envoy, self._port, lambda: client.list_tables(Limit=1))
        if worker is not None:
            self.p.placed = getattr(self.p, "placed", 0) + 1
            tag["value"] = f"{worker}/{self.p.placed}"
        return worker

    def _place(self, reuse: list) -> None:
        everyone = set(worker_names(self.p.envoy))
        self.clients, self.workers, self._tags = [], [], []
        for _ in range(self.max_clients):
            if reuse:
                client, tag = reuse.pop(0)
                client.close()  # its next request opens a new connection
            else:
                client, tag = self.make_client(), {"value": UNATTRIBUTED}
                _tag_requests(client, tag)
            worker = self._place_one(client, tag)
            if worker is None:
                client.close()
                continue
            self.clients.append(client)
            self.workers.append(worker)
            self._tags.append(tag)
            if not reuse and len(self.clients) >= self.count and (not self.cover or set(self.workers) >= everyone):
                self._placed_at = worker_connections(self.p.envoy, self._port, "downstream_cx_total")
                return
        raise AssertionError(f"{self.max_clients} connections did not reach every worker "
                             f"({sorted(everyone)}): {self.workers}")

    def intact(self) -> bool:
        """Whether no connection was opened since the clients were placed."""
        return worker_connections(self.p.envoy, self._port, "downstream_cx_total") == self._placed_at

    def place_again(self) -> None:
        """Reconnects every client and places it anew (more clients join if
        the workers are not all covered)."""
        self._place(reuse=list(zip(self.clients, self._tags)))

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

    def close(self) -> None:
        for c in self.clients:
            c.close()


class WorkerConnections:
    """One raw keep-alive connection to the listener per Envoy worker, each
    sending signed ``ListTables`` requests tagged with its worker: the
    cheapest way to ask every worker where it routes. ``lost`` says that
    Envoy ended one of them (``connection: close``), so that the placement
    no longer holds."""

    def __init__(self, p, max_connections: int = 32):
        # Signed for the Host the filter routes (it still connects to the
        # listener): signed_headers only names the endpoint.
        self.endpoint = f"http://{p.authority}" if getattr(p, "authority", None) else p.endpoint
        self.lost = False
        host, port = "127.0.0.1", listener_port(p)
        self.conns: dict[str, http.client.HTTPConnection] = {}
        everyone = set(worker_names(p.envoy))
        try:
            for _ in range(max_connections):
                conn = http.client.HTTPConnection(host, port, timeout=30)
                worker = on_new_connection(p.envoy, port, lambda: self._ask(conn, UNATTRIBUTED))
                if worker is None or worker in self.conns or self.lost:
                    self.lost = False
                    conn.close()
                    continue
                self.conns[worker] = conn
                if set(self.conns) == everyone:
                    return
            raise AssertionError(f"{max_connections} connections did not reach every worker: "
                                 f"{sorted(self.conns)} of {sorted(everyone)}")
        except BaseException:
            self.close()
            raise

    def _ask(self, conn: http.client.HTTPConnection, tag: str) -> tuple[int, str | None, bytes]:
        body = b"{}"
        conn.request("POST", "/", body=body,
                     headers=signed_headers(self.endpoint, "ListTables", body, {CLIENT_HEADER: tag}))
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.lost = True
        return resp.status, resp.getheader("content-type"), data

    def ask(self, worker: str) -> tuple[int, str | None, bytes]:
        """One request on ``worker``'s connection: status, content type, body."""
        return self._ask(self.conns[worker], f"{worker}/probe")

    def send(self, per_worker: int) -> float:
        """``per_worker`` requests on each connection, one after another;
        returns the ``time.monotonic()`` taken before them. Raises
        AssertionError if one is not answered 200."""
        since = time.monotonic()
        for worker, conn in self.conns.items():
            for _ in range(per_worker):
                status, _, data = self.ask(worker)
                assert status == 200, (worker, status, data[:300])
        return since

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def worker_of(record: DynamoRequest) -> str | None:
    """The worker that picked the node for a recorded request, when it came
    from a client placed by :class:`Clients` or :class:`WorkerConnections`."""
    tag = next((v for k, v in record.headers if k.lower() == CLIENT_HEADER), None)
    if tag is None or tag == UNATTRIBUTED:
        return None
    return tag.split("/", 1)[0]


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


def nodes_by_worker(records: Iterable[DynamoRequest]) -> dict[str | None, dict[str, int]]:
    """Per-node counts of the records, per worker (None: not from a placed
    client)."""
    out: dict[str | None, dict[str, int]] = {}
    for r in records:
        counts = out.setdefault(worker_of(r), {})
        counts[r.node] = counts.get(r.node, 0) + 1
    return out


def assert_round_robin(records: Iterable[DynamoRequest], nodes: Iterable[str], what: str = "spread") -> None:
    """Asserts the exact spread of round robin over ``nodes``, per worker.

    Each worker picks with its own round robin, which cycles through the
    scope's list in a fixed order (a new copy of the same list keeps the
    position). So when ``records`` are *every* request a worker picked in a
    stretch of time (nothing else went through that worker meanwhile: the
    caller makes sure of that) and the list did not change, they are a run
    of consecutive turns of its cycle: of the worker's ``k`` requests, each
    of the ``N`` nodes got ``k // N`` or ``k // N + 1``, whatever turn the
    run started at. Summed over ``W`` workers, a node's count is within
    ``W * (N - 1) / N`` of the mean: this per-worker bound is the tight one.
    """
    nodes = sorted(set(nodes))
    by_worker = nodes_by_worker(records)
    assert None not in by_worker, f"{what}: requests from no placed client: {by_worker[None]}"
    for worker, counts in sorted(by_worker.items()):
        k = sum(counts.values())
        low, high = k // len(nodes), -(-k // len(nodes))
        got = {a: counts.get(a, 0) for a in nodes}
        assert set(counts) <= set(nodes) and all(low <= n <= high for n in got.values()), \
            f"{what}: {worker} sent {k} requests, so {low}..{high} to each of {nodes}; got {counts}"


def failed_answers(envoy, stat_prefix: str = "dynamodb") -> int:
    """Envoy's 5xx answers to clients so far (a request whose node failed
    it, or the filter's own 503), on the listener whose HTTP connection
    manager has ``stat_prefix`` (envoy/envoy.yaml's by default)."""
    return int(envoy.stat(f"http.{stat_prefix}.downstream_rq_5xx"))


def wait_served_by(p, clients: Clients, send: Callable[[], float], expected: Iterable[str],
                   *, cover: bool = True, run: int | None = None, operations: Iterable[str] | None = None,
                   where: Callable[[DynamoRequest], bool] | None = None,
                   timeout: float = 10.0, what: str = "routing") -> dict[str, int]:
    """Repeats ``send()`` (which sends through ``clients`` and returns its
    start time) until one whole batch showed every worker routing only to
    ``expected`` nodes (and, with ``cover``, to every one of them), with no
    request failed; returns that batch's per-node counts. Nothing but
    ``clients`` may send through Envoy meanwhile.

    This is the condition that each worker's VM routes by the state the test
    waits for: every worker is judged by the requests it picked itself, not
    by the batch as a whole, in which one worker's fresh routes could hide
    another's stale ones. A pick of a node that no longer serves leaves no
    record at any node (the SDK retries it elsewhere), so a batch counts
    only if Envoy answered no 5xx meanwhile; and each worker must pick at
    least ``run`` times in it (by default ``len(expected)``): with round
    robin, ``run`` picks in a row visit every node of a list of up to
    ``run`` nodes, so a worker still holding a node it should not (dead or
    not) shows it. A batch after which a client had to reconnect does not
    count either: the clients are placed again and the next batch decides.
    """
    expected = set(expected)
    run = run if run is not None else len(expected)
    last: dict = {}

    def once():
        nonlocal last
        if not clients.intact():
            clients.place_again()
        workers = set(clients.workers)
        failed = failed_answers(p.envoy, p.stat_prefix)
        since = send()
        records = served(p.cluster, since, operations, where=where)
        last = nodes_by_worker(records)
        if failed_answers(p.envoy, p.stat_prefix) != failed or not clients.intact():
            return False
        if set(last) != workers or not all(sum(last[w].values()) >= run for w in workers):
            return False
        if not all(set(seen) <= expected for seen in last.values()):
            return False
        if cover and not all(set(last[w]) == expected for w in workers):
            return False
        return nodes_of(records)

    try:
        return net.wait_for(once, timeout=timeout, interval=0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: batches never went only to {sorted(expected)} from every worker, "
                             f"{run} or more each and none failed; the last went to {last}") from None


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


def send_raw(port: int, method: str, path: str, headers: list[tuple[str, str]],
             body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request to the listener on a new connection, exactly as given
    (no header added but Content-Length, last, for a body): status,
    headers, body of the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
