"""What the filter tests share: a simulated cluster behind a real Envoy that
loads the filter, and SDK load through it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .filter_config import SHIPPED_CONFIG, envoy_config
from . import net


@dataclass
class Proxied:
    cluster: object
    envoy: object
    endpoint: str
    interval_s: float
    filter_keys: dict = field(default_factory=dict)


def start_proxied(make_cluster, make_envoy, *, n_nodes=3, concurrency=2, seeds=None,
                  cluster=None, shipped=SHIPPED_CONFIG, edit_config=None,
                  **filter_keys) -> Proxied:
    """A cluster of `n_nodes` and an Envoy in front of it, configured from
    envoy/envoy.yaml with the cluster's first node as seed (unless `seeds`)."""
    if cluster is None:
        cluster = make_cluster(n_nodes=n_nodes)
    filter_keys["seeds"] = seeds if seeds is not None else [cluster.addresses[0]]
    if "port" not in filter_keys:
        filter_keys["port"] = cluster.port
    listener_port = net.free_port()
    config = envoy_config(listener_port=listener_port, admin_port=net.free_port(),
                          shipped=shipped, **filter_keys)
    if edit_config is not None:
        config = edit_config(config)
    envoy = make_envoy(config, concurrency=concurrency)
    interval_s = filter_keys.get("refresh_interval_ms", 1000) / 1000
    return Proxied(cluster, envoy, f"http://127.0.0.1:{listener_port}", interval_s, filter_keys)


def wait_discovered(p: Proxied, n: int, timeout: float = 10.0) -> None:
    """Waits until the filter has logged a discovered list of `n` nodes, and
    then two ticks (a tenth of the interval each), by which every worker VM
    routes over that list."""
    net.wait_for(lambda: f"discovered {n} nodes" in p.envoy.log_text(), timeout=timeout,
                 message=f"filter to discover {n} nodes")
    tick = min(max(p.interval_s / 10, 0.02), 1.0)
    time.sleep(2 * tick + 0.05)


def create_table(client, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


class Load:
    """Steady SDK traffic in background threads until stopped; records every
    error the application would see."""

    def __init__(self, make_client, table: str, threads: int = 2, pause: float = 0.0):
        self.make_client = make_client
        self.table = table
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: list[str] = []
        self.pause = pause
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._run, i) for i in range(threads)]

    def _run(self, worker: int) -> None:
        client = self.make_client()
        i = 0
        while not self.done.is_set():
            try:
                client.get_item(TableName=self.table, Key={"pk": {"S": f"w{worker}"}, "sk": {"S": str(i % 10)}})
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                with self.lock:
                    self.errors.append(repr(e))
            i += 1
            if self.pause:
                time.sleep(self.pause)

    def stop(self) -> None:
        self.done.set()
        for f in self.futures:
            f.result(timeout=60)
        self.pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def counts_since(cluster, before: dict) -> dict:
    now = cluster.requests_per_node()
    return {a: now.get(a, 0) - before.get(a, 0) for a in set(now) | set(before)}


def sleep_intervals(p: Proxied, n: float) -> None:
    time.sleep(p.interval_s * n)


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
