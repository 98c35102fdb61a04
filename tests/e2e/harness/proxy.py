"""What the filter tests share: a simulated cluster behind a real Envoy that
loads the filter (the ``proxied`` fixture makes one), the wait for its
discovery, one table schema, and steady SDK load through it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import net
from .envoy import on_free_ports
from .filter_config import SHIPPED_CONFIG, envoy_config
from .traffic import WorkerConnections, nodes_by_worker, served


@dataclass
class Proxied:
    """A cluster (None when a test runs without one) and the Envoy in front
    of it. ``make_envoy`` is the fixture's factory, so a restarted Envoy is
    stopped at teardown too."""

    cluster: Any
    envoy: Any
    endpoint: str
    interval_s: float
    filter_keys: dict = field(default_factory=dict)
    make_envoy: Callable[..., Any] | None = field(default=None, repr=False)
    #: Clients placed on workers so far (each gets its own number).
    placed: int = 0
    #: The Host the harness's own requests (wait_discovered) carry, for a
    #: filter that routes only some hosts; None: the listener's address.
    authority: str | None = None
    #: The stat_prefix of the listener's HTTP connection manager (envoy/envoy.yaml's).
    stat_prefix: str = "dynamodb"

    def wait_discovered(self, nodes: Iterable[str] | None = None, discovered: int | None = None,
                        timeout: float = 10.0) -> None:
        wait_discovered(self, nodes, discovered, timeout)

    def restart_envoy(self) -> None:
        """A new Envoy process with the same configuration and ports."""
        self.envoy.stop()
        self.envoy = self.make_envoy(self.envoy.config, concurrency=self.envoy.concurrency,
                                     extra_args=self.envoy.extra_args)


def start_proxied(make_cluster, make_envoy, *, n_nodes: int = 3, concurrency: int = 2, seeds=None,
                  cluster=None, shipped: Path = SHIPPED_CONFIG,
                  edit_config: Callable[[dict], dict] | None = None, envoy_args: Iterable[str] = (),
                  **filter_keys) -> Proxied:
    """A cluster of ``n_nodes`` (or ``cluster``; none with ``n_nodes=0``,
    then ``seeds`` and ``port`` must be given) and an Envoy in front of it,
    configured from envoy/envoy.yaml (or ``shipped``) with the cluster's
    first node as seed (unless ``seeds``) and ``filter_keys`` set in the
    filter's configuration; ``edit_config`` changes the Envoy config
    further, ``envoy_args`` are added to Envoy's command line. Returns once
    Envoy is ready, before anything is discovered."""
    if cluster is None and n_nodes:
        cluster = make_cluster(n_nodes=n_nodes)
    if seeds is None:
        seeds = [cluster.addresses[0]]
    filter_keys["seeds"] = seeds
    if "port" not in filter_keys:
        filter_keys["port"] = cluster.port

    def start() -> tuple[Any, int]:
        listener_port = net.free_port()
        config = envoy_config(listener_port=listener_port, admin_port=net.free_port(),
                              shipped=shipped, **filter_keys)
        if edit_config is not None:
            config = edit_config(config)
        return make_envoy(config, concurrency=concurrency, extra_args=list(envoy_args)), listener_port

    envoy, listener_port = on_free_ports(start)
    interval_s = filter_keys.get("refresh_interval_ms", 1000) / 1000
    return Proxied(cluster, envoy, f"http://127.0.0.1:{listener_port}", interval_s, filter_keys, make_envoy)


def wait_discovered(p: Proxied, nodes: Iterable[str] | None = None, discovered: int | None = None,
                    timeout: float = 10.0) -> None:
    """Waits until the filter has discovered ``discovered`` nodes (by
    default as many as ``nodes``) and every Envoy worker routes over
    ``nodes`` (by default every node of the cluster), and only them.

    The filter logs ``discovered N nodes`` once, when the first answer is in
    the shared record; each worker's VM takes the record up on its next
    tick, which :func:`wait_routed` then sees."""
    expected = list(nodes if nodes is not None else p.cluster.addresses)
    listed = discovered if discovered is not None else len(expected)
    net.wait_for(lambda: f"discovered {listed} nodes" in p.envoy.log_text(), timeout=timeout,
                 message=f"filter to discover {listed} nodes")
    wait_routed(p, expected, timeout)


def wait_routed(p: Proxied, nodes: Iterable[str], timeout: float = 10.0) -> None:
    """Waits until every Envoy worker routes over ``nodes``, and only them.
    Nothing else may be sent through Envoy meanwhile.

    No stat or log line tells that a worker took up the shared record (the
    filter's stats are process-wide), so each worker is asked where it
    routes: one keep-alive connection per worker sends ``M`` requests in a
    row, ``M`` being every node the worker could still route to (the
    cluster's nodes and ``nodes``), until on every worker such a run went to
    exactly ``nodes``. With round robin, ``M`` consecutive picks visit every
    node of a list of at most ``M``: a worker still holding a node it should
    not shows it, one missing a node cannot cover ``nodes``. Least request
    (ties go round robin) covers its list at the latest after a few runs;
    it may skip a node, so with it only a wait for a list that can only
    grow (first discovery) is exact. A run that fails (a listed node that
    does not serve) counts as not yet; if Envoy ended a connection after
    it, the connections are placed anew. The requests are signed
    ``ListTables`` (no table needed), tagged with their worker.
    """
    expected = sorted(set(nodes))
    run = len(set(expected) | set(p.cluster.addresses))
    conns: WorkerConnections | None = None
    last: dict = {}

    def every_worker_routes_over_them():
        nonlocal conns, last
        if conns is None or conns.lost:
            # (Re)placed: Envoy ended a connection after a failed request.
            if conns is not None:
                conns.close()
            conns = None
            conns = WorkerConnections(p)
        since = conns.send(per_worker=run)
        last = nodes_by_worker(served(p.cluster, since, {"ListTables"}))
        return (not conns.lost and set(last) == set(conns.conns)
                and all(sorted(c) == expected for c in last.values()))

    try:
        net.wait_for(every_worker_routes_over_them, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"not every worker routes over {expected} after {timeout} s: "
                             f"the last runs went to {last}") from None
    finally:
        if conns is not None:
            conns.close()


def create_table(client, name: str) -> None:
    """The suite's table: partition key ``pk``, sort key ``sk``, both strings."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


class Load:
    """Steady SDK traffic (GetItem) in background threads until stopped;
    records every error the application would see. ``paused()`` holds every
    thread between two calls, for a judgement of routing no load request
    may mix into."""

    def __init__(self, make_client, table: str, threads: int = 2):
        self.table = table
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: list[str] = []
        self.clients = [make_client() for _ in range(threads)]
        self._cond = threading.Condition()
        self._paused = False
        self._busy = 0
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._run, i) for i in range(threads)]

    def _run(self, worker: int) -> None:
        client = self.clients[worker]
        i = 0
        while True:
            with self._cond:
                while self._paused and not self.done.is_set():
                    self._cond.wait()
                if self.done.is_set():
                    return
                self._busy += 1
            try:
                client.get_item(TableName=self.table, Key={"pk": {"S": f"w{worker}"}, "sk": {"S": str(i % 10)}})
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                with self.lock:
                    self.errors.append(repr(e))
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
            i += 1

    @contextmanager
    def paused(self):
        """No load request is in flight or sent within the block."""
        with self._cond:
            self._paused = True
            while self._busy:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.done.set()
            self._cond.notify_all()
        for f in self.futures:
            f.result(timeout=60)
        self.pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def host_stats(envoy, cluster_name: str = "alternator") -> dict:
    """Envoy's per-host stats of a cluster, from /clusters:
    {"IP:PORT": {"rq_total": n, "cx_connect_fail": n, ...}}."""
    status, body = envoy.admin_get("/clusters")
    assert status == 200, body[:200]
    hosts: dict = {}
    for line in body.splitlines():
        # An IPv6 host has "::" of its own: split around it.
        name, _, rest = line.partition("::")
        parts = rest.rsplit("::", 2)
        # Hosts only (IP:PORT, [IPv6]:PORT), not cluster-wide lines such as
        # default_priority::max_connections.
        if name == cluster_name and len(parts) == 3 and (parts[0][:1].isdigit() or parts[0][:1] == "["):
            host, stat, value = parts
            try:
                hosts.setdefault(host, {})[stat] = int(value)
            except ValueError:
                pass
    return hosts
