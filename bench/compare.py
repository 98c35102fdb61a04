#!/usr/bin/env python3
"""What the alternator-lb filter costs: Envoy with the filter vs. plain Envoy round robin.

In one run, with the same Envoy binary, the same Envoy ``--concurrency`` and
the same backend (fake-node on three addresses of one reserved loopback
block, one shared port), these variants are measured:

``direct``
    wrk straight to the first fake node: the ceiling of wrk + fake-node on
    this machine, and the latency floor without any proxy;
``static-rr``
    Envoy with the shipped envoy/envoy.yaml, except that the alternator_lb
    HTTP filter is removed and the ``alternator`` cluster is a STATIC cluster
    of the three nodes with ``lb_policy: ROUND_ROBIN`` (same listener, HCM,
    router, timeouts, circuit breakers and protocol options);
``floor`` (only with ``--floor-wasm PATH``)
    static-rr's configuration with the Wasm HTTP filter kept and given the
    module PATH (bench/noop-filter, a module that does nothing): the floor
    any proxy-wasm filter costs;
``baseline`` (only with ``--baseline-wasm PATH``)
    the filter's configuration with the module PATH (an earlier build of the
    filter, e.g. scripts/bench --baseline-rev REV), to compare two builds of
    the filter within one run;
``filter``
    Envoy with the shipped envoy/envoy.yaml as it is (the Wasm filter and its
    ORIGINAL_DST clusters), seeds = the first node, port = fake-node's;
    ``--filter-variant filter:KEY=VALUE,...`` changes keys of its configuration;
NAME (only with ``--filter-variant NAME:KEY=VALUE,...``, repeatable)
    the filter variant's module and configuration with those keys changed,
    e.g. ``filter-rr:load_balancing=round_robin``: two configurations of one
    build in the same rounds, reported against ``filter``.  ``--balancing``
    is short for ``filter:load_balancing=least_request`` and
    ``filter-rr:load_balancing=round_robin``: with equal nodes, what
    least-request costs on the request path against round robin.

Every Envoy variant is its own Envoy process.  Per Envoy concurrency level
(``--concurrency 1,2``) they are started once and kept running; every
variant is warmed up; then ``--rounds`` rounds run, each measuring every
variant with two load shapes, interleaved:

* throughput: ``wrk -t1 -cN`` (N = ``--connections``, default 16) keep-alive;
* latency: ``wrk -t1 -c1 --latency``, one connection, closed loop: p50/p99.

Within a round the order is direct, then the Envoy variants (static-rr,
floor, baseline, filter, then the --filter-variant ones in the order given),
and direct, then the Envoy variants in reverse order in the next round, so a
slow drift of the machine does not favour one Envoy.  The report gives
medians over rounds, each variant against static-rr, and filter against
baseline, floor and the --filter-variant ones (when measured); the raw
numbers of each round go to a second table and to a JSON file next to the
markdown.

With ``--slow-node [MS]`` (default 150 ms; implies ``--balancing``), a second
scenario follows the first at every concurrency level: a second fake-node
whose third node answers ``POST /`` MS late (health checks and /localnodes
stay immediate), the Envoy variants (not direct) started anew against it and
measured the same way; the report adds each variant's req/s, p50/p99, and
the share of requests each node served.

Exit status: 0 when every measurement completed with 2xx answers only (a
slow filter is not a failure: this is a benchmark, not a test); 1 on errors
(non-2xx responses, socket errors, a variant failing to start); 2 if a
binary or wrk is missing; 130 on Ctrl-C.  Everything started is stopped by
PID on the way out.

It builds nothing (scripts/bench does, including --baseline-rev and
--floor).  Run with
``.venv/bin/python bench/compare.py [--quick] [--rounds R] [--duration S]
[--baseline-wasm PATH] [--floor-wasm PATH] [--balancing] [--slow-node [MS]]
[--filter-variant NAME:KEY=VALUE,...]``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (FAKE_NODE, NODES, REPO, WASM, FakeNode, Wrk, WrkResult,  # noqa: F401
                    mib, missing_prerequisites, percentile, proc_cpu_seconds, proc_memory,
                    raise_on_sigterm, wrk_version)

from harness.filter_config import envoy_config, wasm_plugin  # noqa: E402  (common put tests/e2e on sys.path)
from harness.envoy import EnvoyProcess, envoy_binary  # noqa: E402
from harness.net import free_port, wait_for  # noqa: E402

#: Every built-in variant, in the order of the report and of odd rounds
#: (the --filter-variant ones follow); which ones a run measures depends on
#: its options (Compare.variants).
ALL_VARIANTS = ("direct", "static-rr", "floor", "baseline", "filter")
VARIANTS = ("direct", "static-rr", "filter")  # the default run
#: Variants whose Envoy runs the alternator_lb filter (its ORIGINAL_DST
#: clusters; started once the log says the nodes were discovered).
FILTER_VARIANTS = ("baseline", "filter")
#: Comparisons between two Wasm variants reported besides "vs static-rr":
#: (variant, against), each when both were measured.
PAIRS = (("filter", "baseline"), ("filter", "floor"), ("baseline", "floor"))
SHAPES = ("throughput", "latency")
BUSY_PCT = 25  # others' CPU above this (% of a core) during a run: flagged as disturbed
#: --balancing: the filter variant with least-request balancing, next to the
#: same module and configuration with round robin.
BALANCING = (("filter", {"load_balancing": "least_request"}),
             ("filter-rr", {"load_balancing": "round_robin"}))
#: --slow-node without a value, in ms.
SLOW_NODE_MS = 150.0
#: The node fake-node delays in the slow-node scenario (0-based): the third,
#: so neither the seed nor direct's target (both the first) is the slow one.
SLOW_NODE_INDEX = NODES - 1
VARIANT_NAME = re.compile(r"[a-z][a-z0-9-]{0,15}")
CONFIG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- Envoy configurations ----------------------------------------------------------
#: --handoff-header: the filter variant's ``alternator`` cluster reads the node
#: from this request header (an experiment: a module that sets it, not filter
#: state, must be given with --wasm; the baseline variant keeps filter state).
HANDOFF_HEADER: str | None = None


def _hcm(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _set_module(config: dict, wasm: Path) -> dict:
    """Point the alternator_lb HTTP filter of ``config`` at the module ``wasm``;
    returns the filter's PluginConfig."""
    for f in _hcm(config)["http_filters"]:
        if f["name"] == "alternator_lb":
            plugin = f["typed_config"]["config"]
            plugin["vm_config"]["code"]["local"]["filename"] = str(wasm)
            return plugin
    raise RuntimeError("envoy/envoy.yaml: no alternator_lb http filter")


def filter_config(listener_port: int, admin_port: int, fake: FakeNode, wasm: Path | None = None,
                  handoff_header: str | None = None, keys: dict | None = None) -> dict:
    """envoy/envoy.yaml as users run it; only ports, module path, seeds and port change.
    ``wasm``: the module (default: target/alternator_lb.wasm, as built);
    ``keys``: filter configuration keys set on top (a --filter-variant)."""
    config = envoy_config(listener_port=listener_port, admin_port=admin_port,
                          seeds=[fake.addresses[0]], port=fake.port, wasm=wasm or WASM)
    if keys:
        plugin = wasm_plugin(config)
        doc = json.loads(plugin["configuration"]["value"])
        doc.update(keys)
        plugin["configuration"]["value"] = json.dumps(doc)
    if handoff_header is not None:
        for c in config["static_resources"]["clusters"]:
            if c["name"] == "alternator":
                c["original_dst_lb_config"] = {"use_http_header": True,
                                               "http_header_name": handoff_header}
    return config


def static_rr_config(listener_port: int, admin_port: int, fake: FakeNode, wasm: Path | None = None,
                     vm_id: str = "static-with-wasm", keep_configuration: bool = False) -> dict:
    """The same config without the Wasm filter, the ``alternator`` cluster made a
    STATIC ROUND_ROBIN cluster of the fake nodes.  Everything else (listener,
    HCM, route timeout, router, connect timeout, circuit breakers, HTTP
    protocol options, TCP keepalive) stays as shipped, so only the load
    balancing differs.

    With ``wasm`` (the floor variant, --static-with-wasm) the Wasm HTTP filter
    stays, with the same settings and that module: the floor any proxy-wasm
    filter costs in Envoy.  The module gets no configuration unless
    ``keep_configuration`` (alternator_lb itself keeps its own; the STATIC
    cluster ignores the node it picks)."""
    config = envoy_config(listener_port=listener_port, admin_port=admin_port,
                          seeds=[fake.addresses[0]], port=fake.port, wasm=WASM)
    hcm = _hcm(config)
    before = len(hcm["http_filters"])
    if wasm is not None:
        plugin = _set_module(config, wasm)
        plugin["vm_config"]["vm_id"] = vm_id
        if not keep_configuration:
            plugin["configuration"]["value"] = ""
    else:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "alternator_lb"]
        if len(hcm["http_filters"]) != before - 1:
            raise RuntimeError("envoy/envoy.yaml: expected exactly one alternator_lb http filter")
    clusters = config["static_resources"]["clusters"]
    for i, c in enumerate(clusters):
        if c["name"] != "alternator":
            continue
        # Settings that only mean something to ORIGINAL_DST go; the rest stays.
        rest = {k: v for k, v in c.items()
                if k not in ("name", "type", "lb_policy", "cleanup_interval", "original_dst_lb_config")}
        clusters[i] = {
            "name": "alternator",
            "type": "STATIC",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {"cluster_name": "alternator", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": a, "port_value": fake.port}}}}
                for a in fake.addresses]}]},
            **rest,
        }
        break
    else:
        raise RuntimeError("envoy/envoy.yaml: no cluster named alternator")
    return config


# -- machine facts -------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def envoy_version() -> str:
    try:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(r"version:\s*(\S+)", out)
    return m.group(1) if m else out.strip() or "?"


def source_revision() -> str:
    """The commit the tree is at, and whether it has uncommitted changes."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.replace("-dirty", " + uncommitted changes") if out else "?"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_cpu_seconds() -> tuple[float, float, float]:
    """Whole machine since boot: (busy, idle, steal) CPU seconds, all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tck = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tck, (idle + iowait) / tck, steal / tck


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def median_of(ms: list[dict], variant: str, shape: str, key: str) -> float | None:
    """The median of ``key`` over the measurements of one variant and shape."""
    return median([m[key] for m in ms if m["variant"] == variant and m["shape"] == shape])


def spread_pct(per_node: dict[str, int]) -> float | None:
    """Largest deviation of a node's count from the mean, in % of the mean."""
    total = sum(per_node.values())
    if not total:
        return None
    even = total / len(per_node)
    return max(abs(n - even) for n in per_node.values()) / even * 100


class Module:
    """A Wasm module a variant loads, copied into the run's directory when the
    run starts, so every concurrency level loads the same bytes even if the
    source is rebuilt meanwhile."""

    def __init__(self, source: Path, copy: Path):
        self.source = source
        self.path = copy
        shutil.copy2(source, copy)
        data = copy.read_bytes()
        self.bytes = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.built = datetime.datetime.fromtimestamp(copy.stat().st_mtime, datetime.timezone.utc)

    def describe(self) -> str:
        return (f"`{self.source}`, {self.bytes:,} bytes (sha256 {self.sha256[:12]}), "
                f"built {self.built:%Y-%m-%d %H:%M:%S UTC}")

    def as_json(self) -> dict:
        return {"source": str(self.source), "bytes": self.bytes, "sha256": self.sha256,
                "built": self.built.isoformat(timespec="seconds")}


# -- the benchmark ---------------------------------------------------------------------
class Compare:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="alternator-lb-compare-"))
        self.wrk = Wrk(self.workdir)
        # The modules as they are now, copied (Module): every concurrency level
        # loads the same bytes even if a tree's .wasm is rebuilt during the run.
        self.modules: dict[str, Module] = {}
        self.source_wasm = Path(args.wasm) if args.wasm else WASM
        self.modules["filter"] = Module(self.source_wasm, self.workdir / WASM.name)
        if args.static_with_wasm:
            self.modules["static-rr"] = Module(Path(args.static_with_wasm).resolve(),
                                               self.workdir / "static-rr.wasm")
        if args.floor_wasm:
            self.modules["floor"] = Module(Path(args.floor_wasm).resolve(), self.workdir / "floor.wasm")
        if args.baseline_wasm:
            self.modules["baseline"] = Module(Path(args.baseline_wasm).resolve(),
                                              self.workdir / "baseline.wasm")
        fm = self.modules["filter"]
        self.wasm, self.wasm_bytes, self.wasm_sha256, self.wasm_built = fm.path, fm.bytes, fm.sha256, fm.built
        # --filter-variant / --balancing: configuration keys per filter variant
        # ("filter" itself may have some); the others are extra variants.
        self.filter_keys: dict[str, dict] = dict(args.filter_variants)
        self.extra_filters = [v for v in self.filter_keys if v != "filter"]
        self.variants = [v for v in ALL_VARIANTS
                         if v in ("direct", "static-rr", "filter") or v in self.modules]
        self.variants += self.extra_filters
        self.envoy_variants = [v for v in self.variants if v != "direct"]
        self.pairs = [(v, w) for v, w in PAIRS if v in self.variants and w in self.variants]
        self.pairs += [("filter", v) for v in self.extra_filters]
        self.name_width = max(9, *(len(v) for v in self.variants))
        self.fake: FakeNode | None = None  # equal nodes
        self.slow_fake: FakeNode | None = None  # --slow-node: one node delayed
        self.backend: FakeNode | None = None  # the one the scenario being measured uses
        self.scenario = "equal"
        self.slow_measurements: list[dict] = []
        self.slow_levels: list[dict] = []
        self.envoys: dict[str, EnvoyProcess] = {}
        self.urls: dict[str, str] = {}
        self.measurements: list[dict] = []
        self.levels: list[dict] = []
        self.errors: list[str] = []
        self.count_warnings: list[str] = []

    def is_filter(self, variant: str) -> bool:
        """Whether the variant's Envoy runs alternator_lb with its ORIGINAL_DST clusters."""
        return variant in FILTER_VARIANTS or variant in self.extra_filters

    def module_of(self, variant: str) -> Module | None:
        """The Wasm module the variant's Envoy loads (None: no Wasm)."""
        if variant in self.extra_filters:
            return self.modules["filter"]
        return self.modules.get(variant)

    def balancing_of(self, variant: str) -> str:
        """How the variant's Envoy picks a node, for the slow-node table."""
        if variant in ("static-rr", "floor"):
            return "Envoy ROUND_ROBIN"
        lb = self.filter_keys.get(variant, {}).get("load_balancing")
        return f"`{lb}`" if lb else "module's default"

    @staticmethod
    def keys_text(keys: dict) -> str:
        return ", ".join(f"`{k}={json.dumps(v)}`" for k, v in keys.items())

    # -- processes -------------------------------------------------------------
    def envoy_config(self, variant: str, listener_port: int, admin_port: int) -> dict:
        module = self.modules.get(variant)
        if variant == "static-rr":
            # --static-with-wasm: static-rr itself loads a module (the old way to
            # get the floor; alternator_lb.wasm given there keeps its configuration).
            return static_rr_config(listener_port, admin_port, self.backend,
                                    wasm=module.path if module else None,
                                    keep_configuration=bool(module)
                                    and module.source.name == "alternator_lb.wasm")
        if variant == "floor":
            return static_rr_config(listener_port, admin_port, self.backend, wasm=module.path,
                                    vm_id="floor",
                                    keep_configuration=module.source.name == "alternator_lb.wasm")
        if variant == "baseline":
            return filter_config(listener_port, admin_port, self.backend, wasm=module.path)
        if variant == "filter" or variant in self.extra_filters:
            return filter_config(listener_port, admin_port, self.backend,
                                 wasm=self.modules["filter"].path, handoff_header=HANDOFF_HEADER,
                                 keys=self.filter_keys.get(variant))
        raise ValueError(variant)

    def start_envoys(self, concurrency: int) -> None:
        for name in self.envoy_variants:
            listener_port = free_port()
            config = self.envoy_config(name, listener_port, free_port())
            print(f"  starting Envoy {name} (--concurrency {concurrency}) on 127.0.0.1:{listener_port}",
                  flush=True)
            self.envoys[name] = EnvoyProcess(config, concurrency=concurrency,
                                             workdir=self.workdir / f"c{concurrency}-{name}")
            self.urls[name] = f"http://127.0.0.1:{listener_port}/"
        for name in self.envoy_variants:
            if self.is_filter(name):
                envoy = self.envoys[name]
                wait_for(lambda: f"discovered {NODES} nodes" in envoy.log_text(), timeout=20,
                         message=f"the {name} variant's 'discovered {NODES} nodes' log line")

    def stop_envoys(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.envoys = {}
        self.urls = {k: v for k, v in self.urls.items() if k == "direct"}

    def print_envoy_logs(self) -> None:
        for name, envoy in self.envoys.items():
            print(f"Envoy {name} log: {envoy.log_path}\n{envoy.log_tail(20)}", file=sys.stderr)

    def stop(self) -> None:
        self.wrk.stop()
        self.stop_envoys()
        for fake in (self.fake, self.slow_fake):
            if fake is not None:
                fake.stop()

    def worker_connections(self, variant: str) -> dict[str, int]:
        """Downstream connections accepted so far by each Envoy worker."""
        stats = self.envoys[variant].stats(filter=r"^listener\..*worker_\d+\.downstream_cx_total$")
        out = {}
        for name, value in stats.items():
            m = re.search(r"\.(worker_\d+)\.downstream_cx_total$", name)
            if m:
                out[m.group(1)] = int(value)
        return dict(sorted(out.items()))

    # -- one wrk run --------------------------------------------------------------
    def wrk_run(self, variant: str, shape: str, seconds: int) -> WrkResult:
        a = self.args
        conns = a.connections if shape == "throughput" else 1
        slow = self.scenario == "slow-node"
        # A delayed node must not turn into wrk timeouts (its default is 2 s).
        timeout = 2 + 2 * a.slow_node / 1e3 if slow else None
        # With a slow node the latencies are bimodal, where wrk's own
        # percentiles mislead (common.WRK_TIMED_SCRIPT): every request is timed.
        timed = slow and shape == "latency"
        r = self.wrk.run(self.urls[variant], seconds, threads=1 if timed else a.wrk_threads,
                         connections=conns, latency=shape == "latency", timeout=timeout, timed=timed)
        if r.non_2xx or r.socket_errors:
            where = " (slow node)" if self.scenario == "slow-node" else ""
            self.errors.append(f"{variant} {shape}{where}: {r.non_2xx} non-2xx responses, "
                               f"{r.socket_errors} socket errors")
        return r

    def measure(self, concurrency: int, rnd: int, variant: str, shape: str) -> dict:
        envoy = self.envoys.get(variant)
        workers0 = self.worker_connections(variant) if envoy else {}
        fake = self.backend
        counts0 = fake.counts()
        envoy_cpu0 = proc_cpu_seconds(envoy.pid) if envoy else None
        fake_cpu0 = proc_cpu_seconds(fake.pid)
        wrk_cpu0 = children_cpu_seconds()
        self_cpu0 = time.process_time()
        machine0 = machine_cpu_seconds()

        r = self.wrk_run(variant, shape, self.args.duration)

        machine1 = machine_cpu_seconds()
        self_cpu = time.process_time() - self_cpu0
        wrk_cpu = children_cpu_seconds() - wrk_cpu0
        fake_cpu = proc_cpu_seconds(fake.pid) - fake_cpu0
        envoy_cpu = proc_cpu_seconds(envoy.pid) - envoy_cpu0 if envoy else 0.0
        counts1 = fake.counts()
        workers1 = self.worker_connections(variant) if envoy else {}

        # fake-node counts a request when it arrives, also a delayed one.
        per_node = {ip: counts1[ip]["dynamodb"] - counts0[ip]["dynamodb"] for ip in fake.addresses}
        answered = sum(per_node.values())
        conns = self.args.connections if shape == "throughput" else 1
        # wrk leaves out the requests in flight when it stops (one per connection;
        # up to two more than wrk's count were seen with a single connection).
        if not 0 <= answered - r.requests <= 2 * conns:
            where = " (slow node)" if self.scenario == "slow-node" else ""
            self.count_warnings.append(f"c{concurrency} round {rnd} {variant} {shape}{where}: "
                                       f"fake-node answered {answered}, wrk counted {r.requests}")
        busy = machine1[0] - machine0[0]
        idle = machine1[1] - machine0[1]
        others = busy - envoy_cpu - fake_cpu - wrk_cpu - self_cpu
        pct = {q: r.percentiles[q] * 1e6 if q in r.percentiles else None for q in (50, 75, 90, 99)}
        mean_us = r.latency_mean * 1e6 if r.latency_mean is not None else None
        max_us = r.latency_max * 1e6 if r.latency_max is not None else None
        timed = {}
        if r.samples_us is not None:
            # Every request timed (slow node): these replace wrk's corrected figures,
            # which stay in the JSON under "wrk_latency".
            timed = {"wrk_latency": {"p50_us": pct[50], "p75_us": pct[75], "p90_us": pct[90],
                                     "p99_us": pct[99], "mean_us": mean_us, "max_us": max_us},
                     "timed_requests": len(r.samples_us)}
            pct = {q: percentile(r.samples_us, q) for q in pct}
            mean_us = statistics.fmean(r.samples_us) if r.samples_us else None
            max_us = max(r.samples_us, default=None)
        m = {
            "scenario": self.scenario,
            "concurrency": concurrency, "round": rnd, "variant": variant, "shape": shape,
            "connections": conns, "requests": r.requests, "seconds": r.seconds, "rps": r.rate,
            "p50_us": pct[50], "p75_us": pct[75], "p90_us": pct[90], "p99_us": pct[99],
            "mean_us": mean_us, "max_us": max_us, **timed,
            "non_2xx": r.non_2xx, "socket_errors": r.socket_errors,
            "per_node": per_node, "fake_node_answered": answered,
            "envoy_worker_connections": {w: workers1[w] - workers0.get(w, 0) for w in workers1},
            "cpu_seconds": {"envoy": envoy_cpu, "fake_node": fake_cpu, "wrk": wrk_cpu,
                            "others": max(others, 0.0), "idle": idle,
                            "steal": machine1[2] - machine0[2]},
            "envoy_cpu_us_per_request": envoy_cpu / r.requests * 1e6 if envoy and r.requests else None,
        }
        (self.slow_measurements if self.scenario == "slow-node" else self.measurements).append(m)
        lat = f"p50 {m['p50_us']:.0f} us p99 {m['p99_us']:.0f} us" if shape == "latency" else ""
        cpu = (f"Envoy {m['envoy_cpu_us_per_request']:.1f} CPU-us/req"
               if m["envoy_cpu_us_per_request"] is not None else "")
        split = "/".join(str(v) for v in m["envoy_worker_connections"].values())
        share = ""
        if fake.delays_ms and answered:
            share = "slow node " + " ".join(f"{per_node[ip] / answered:.1%}" for ip in fake.delays_ms)
        print(f"    {variant:<{self.name_width}} {shape:<10} {r.rate:>9,.0f} req/s  {lat:<26} {cpu:<24}"
              f"{share + '  ' if share else ''}"
              f"{'workers ' + split if shape == 'throughput' and len(workers1) > 1 else ''}",
              flush=True)
        return m

    # -- one concurrency level -------------------------------------------------------
    def level(self, concurrency: int, scenario: str = "equal") -> None:
        """Every variant at one Envoy concurrency level, in ``scenario``:
        "equal" (the backend's nodes alike) or "slow-node" (one delayed;
        the Envoy variants only: direct would only reach a fast node)."""
        a = self.args
        slow = scenario == "slow-node"
        self.scenario = scenario
        self.backend = self.slow_fake if slow else self.fake
        variants = self.envoy_variants if slow else self.variants
        where = (f", one slow node ({self.slow_fake.addresses[SLOW_NODE_INDEX]}: "
                 f"POST / answered {a.slow_node:g} ms late)" if slow else "")
        print(f"\nEnvoy --concurrency {concurrency}{where}", flush=True)
        self.start_envoys(concurrency)
        try:
            rss_start = {v: proc_memory(self.envoys[v].pid) for v in self.envoy_variants}
            print(f"  warm-up: {a.warmup} s of wrk -c{a.connections} per variant", flush=True)
            for v in variants:
                self.wrk_run(v, "throughput", a.warmup)
            for rnd in range(1, a.rounds + 1):
                # direct first; the Envoys in report order in odd rounds, reversed in
                # even ones (every pair swaps who goes first from round to round).
                envoys = self.envoy_variants if rnd % 2 else self.envoy_variants[::-1]
                order = envoys if slow else ["direct", *envoys]
                print(f"  round {rnd}/{a.rounds}: {', '.join(order)}", flush=True)
                for shape in SHAPES:
                    for v in order:
                        self.measure(concurrency, rnd, v, shape)
            time.sleep(a.settle)
            rss_end = {v: proc_memory(self.envoys[v].pid) for v in self.envoy_variants}
            wasm_vms = {v: self.envoys[v].stat("wasm.envoy.wasm.runtime.v8.active", None)
                        for v in self.envoy_variants if self.module_of(v)}
        except Exception:
            self.print_envoy_logs()
            raise
        finally:
            self.stop_envoys()
        (self.slow_levels if slow else self.levels).append({
            "concurrency": concurrency, "rss_start_kib": rss_start, "rss_end_kib": rss_end,
            "wasm_vms": wasm_vms["filter"], "wasm_vms_by_variant": wasm_vms})

    def run(self) -> None:
        self.started = datetime.datetime.now(datetime.timezone.utc)
        t0 = time.monotonic()
        self.load_before = loadavg()
        self.revision = source_revision()
        self.fake = FakeNode(NODES)
        self.urls["direct"] = f"http://{self.fake.addresses[0]}:{self.fake.port}/"
        print(f"fake-node (pid {self.fake.pid}) on {', '.join(self.fake.addresses)} port "
              f"{self.fake.port}; {self.args.rounds} rounds x {self.args.duration} s per measurement")
        if self.args.slow_node is not None:
            self.slow_fake = FakeNode(NODES, delays={SLOW_NODE_INDEX: self.args.slow_node})
            print(f"slow-node scenario: fake-node (pid {self.slow_fake.pid}) on "
                  f"{', '.join(self.slow_fake.addresses)} port {self.slow_fake.port}, "
                  f"{self.slow_fake.addresses[SLOW_NODE_INDEX]} delayed by {self.args.slow_node:g} ms")
        for c in self.args.concurrency:
            self.level(c)
            if self.slow_fake is not None:
                self.level(c, "slow-node")
        self.elapsed = time.monotonic() - t0
        self.load_after = loadavg()

    # -- report -------------------------------------------------------------------------
    def one(self, concurrency: int, rnd: int, variant: str, shape: str, key: str):
        """``key`` of the run of ``variant`` and ``shape`` in that round (None if none)."""
        for m in self.measurements:
            if (m["concurrency"], m["round"], m["variant"], m["shape"]) == (concurrency, rnd, variant,
                                                                              shape):
                return m[key]
        return None

    def paired(self, concurrency: int, variant: str, against: str, shape: str, key: str,
               op, quiet_only: bool = False, measurements: list[dict] | None = None) -> list[float]:
        """Per round, ``op(variant's value, against's value)`` of ``key`` in ``shape``
        runs (the two runs of a round are close in time); with ``quiet_only``
        only rounds where neither run was disturbed by other processes.
        ``measurements``: those of the slow-node scenario instead of equal nodes."""
        out = []
        by = {(m["round"], m["variant"]): m
              for m in (self.measurements if measurements is None else measurements)
              if m["concurrency"] == concurrency and m["shape"] == shape}
        for rnd in range(1, self.args.rounds + 1):
            v_, w_ = by.get((rnd, variant)), by.get((rnd, against))
            if not v_ or not w_ or v_[key] is None or w_[key] is None:
                continue
            if quiet_only and max(self.others_pct(v_), self.others_pct(w_)) > BUSY_PCT:
                continue
            x = op(v_[key], w_[key])
            if x is not None:
                out.append(x)
        return out

    @staticmethod
    def _ratio(x, y):
        return x / y if y else None

    @staticmethod
    def _diff(x, y):
        return x - y

    def summary(self) -> list[dict]:
        rows = []
        for lv in self.levels:
            c = lv["concurrency"]
            ms = [m for m in self.measurements if m["concurrency"] == c]

            base_rps = median_of(ms, "static-rr", "throughput", "rps")
            base_p50 = median_of(ms, "static-rr", "latency", "p50_us")
            for v in self.variants:
                per_node: dict[str, int] = {ip: 0 for ip in self.fake.addresses}
                for m in ms:
                    if m["variant"] == v:
                        for ip, n in m["per_node"].items():
                            per_node[ip] += n
                rps = median_of(ms, v, "throughput", "rps")
                p50 = median_of(ms, v, "latency", "p50_us")
                # Paired per-round comparisons (same round, back to back).
                ratios = added = []
                if v != "direct":
                    ratios = self.paired(c, v, "static-rr", "throughput", "rps", self._ratio)
                    added = self.paired(c, v, "static-rr", "latency", "p50_us", self._diff)
                module = self.module_of(v)
                rows.append({
                    "concurrency": c, "variant": v,
                    "rps": rps,
                    "ratio": rps / base_rps if v != "direct" and rps and base_rps else None,
                    "ratio_per_round": ratios,
                    "p50_us": p50,
                    "p99_us": median_of(ms, v, "latency", "p99_us"),
                    "single_connection_rps": median_of(ms, v, "latency", "rps"),
                    "added_p50_us": p50 - base_p50 if v != "direct" and p50 is not None
                    and base_p50 is not None else None,
                    "added_p50_per_round_us": added,
                    "envoy_cpu_us_per_request": median_of(ms, v, "throughput", "envoy_cpu_us_per_request"),
                    "rss_mib": mib(lv["rss_end_kib"][v]["VmRSS"]) if v in lv["rss_end_kib"] else None,
                    "per_node": per_node,
                    "spread_pct": spread_pct(per_node) if v != "direct" else None,
                    "module_bytes": module.bytes if module else None,
                })
        return rows

    def comparisons(self, rows: list[dict]) -> list[dict]:
        """``variant`` against ``against`` for every measured pair of PAIRS and
        every concurrency level: ratio of the req/s medians, differences of the
        Envoy CPU µs/req and p50 medians, each also per round and from quiet
        rounds only, and the modules' sizes."""
        out = []
        for lv in self.levels:
            c = lv["concurrency"]
            by = {r["variant"]: r for r in rows if r["concurrency"] == c}
            for v, w in self.pairs:
                rv, rw = by[v], by[w]

                def diff(key):
                    return rv[key] - rw[key] if rv[key] is not None and rw[key] is not None else None

                out.append({
                    "concurrency": c, "variant": v, "against": w,
                    "rps_ratio": rv["rps"] / rw["rps"] if rv["rps"] and rw["rps"] else None,
                    "rps_ratio_per_round": self.paired(c, v, w, "throughput", "rps", self._ratio),
                    "rps_ratio_quiet": self.paired(c, v, w, "throughput", "rps", self._ratio, True),
                    "envoy_cpu_us_per_request_diff": diff("envoy_cpu_us_per_request"),
                    "envoy_cpu_us_per_request_diff_per_round": self.paired(
                        c, v, w, "throughput", "envoy_cpu_us_per_request", self._diff),
                    "p50_us_diff": diff("p50_us"),
                    "p50_us_diff_per_round": self.paired(c, v, w, "latency", "p50_us", self._diff),
                    "p50_us_diff_quiet": self.paired(c, v, w, "latency", "p50_us", self._diff, True),
                    "p99_us_diff": diff("p99_us"),
                    "module_bytes": rv["module_bytes"], "against_module_bytes": rw["module_bytes"],
                })
        return out

    @staticmethod
    def shares(per_node: dict[str, int]) -> dict[str, float] | None:
        """Each node's part of the requests, in %."""
        total = sum(per_node.values())
        return {ip: n / total * 100 for ip, n in per_node.items()} if total else None

    def slow_summary(self) -> list[dict]:
        """The slow-node scenario, per concurrency level and Envoy variant:
        medians over rounds as in ``summary``, and the requests each node got
        (summed over the variant's runs, throughput and single-connection
        runs apart: their loads differ, and so may a balancer's choices)."""
        rows = []
        slow_ip = self.slow_fake.addresses[SLOW_NODE_INDEX]
        for lv in self.slow_levels:
            c = lv["concurrency"]
            ms = [m for m in self.slow_measurements if m["concurrency"] == c]

            base_rps = median_of(ms, "static-rr", "throughput", "rps")
            for v in self.envoy_variants:
                per_node = {}
                for shape in SHAPES:
                    per_node[shape] = {ip: 0 for ip in self.slow_fake.addresses}
                    for m in ms:
                        if m["variant"] == v and m["shape"] == shape:
                            for ip, n in m["per_node"].items():
                                per_node[shape][ip] += n
                share = {shape: self.shares(per_node[shape]) for shape in SHAPES}
                rps = median_of(ms, v, "throughput", "rps")
                rows.append({
                    "concurrency": c, "variant": v, "balancing": self.balancing_of(v),
                    "rps": rps,
                    "ratio": rps / base_rps if rps and base_rps else None,
                    "ratio_per_round": self.paired(c, v, "static-rr", "throughput", "rps", self._ratio,
                                                   measurements=self.slow_measurements),
                    "p50_us": median_of(ms, v, "latency", "p50_us"),
                    "p99_us": median_of(ms, v, "latency", "p99_us"),
                    "mean_us": median_of(ms, v, "latency", "mean_us"),
                    "single_connection_rps": median_of(ms, v, "latency", "rps"),
                    "envoy_cpu_us_per_request": median_of(ms, v, "throughput", "envoy_cpu_us_per_request"),
                    "per_node": per_node,
                    "share_pct": share,
                    "slow_node_share_pct": {shape: share[shape][slow_ip] if share[shape] else None
                                            for shape in SHAPES},
                })
        return rows

    def slow_comparisons(self, rows: list[dict]) -> list[dict]:
        """The pairs of ``comparisons`` in the slow-node scenario (both Envoy
        variants): req/s ratio, p50/p99/mean differences, the slow node's shares."""
        out = []
        ms = self.slow_measurements
        for lv in self.slow_levels:
            c = lv["concurrency"]
            by = {r["variant"]: r for r in rows if r["concurrency"] == c}
            for v, w in self.pairs:
                if v not in by or w not in by:
                    continue
                rv, rw = by[v], by[w]

                def diff(key):
                    return rv[key] - rw[key] if rv[key] is not None and rw[key] is not None else None

                out.append({
                    "concurrency": c, "variant": v, "against": w,
                    "rps_ratio": rv["rps"] / rw["rps"] if rv["rps"] and rw["rps"] else None,
                    "rps_ratio_per_round": self.paired(c, v, w, "throughput", "rps", self._ratio,
                                                       measurements=ms),
                    "p50_us_diff": diff("p50_us"), "p99_us_diff": diff("p99_us"),
                    "mean_us_diff": diff("mean_us"),
                    "p99_us_diff_per_round": self.paired(c, v, w, "latency", "p99_us", self._diff,
                                                         measurements=ms),
                    "slow_node_share_pct": rv["slow_node_share_pct"],
                    "against_slow_node_share_pct": rw["slow_node_share_pct"],
                })
        return out

    def slow_markdown(self, rows: list[dict], comparisons: list[dict]) -> list[str]:
        """The slow-node section of the report (empty without --slow-node)."""
        if self.slow_fake is None:
            return []
        a = self.args
        slow_ip = self.slow_fake.addresses[SLOW_NODE_INDEX]

        def f(x, fmt):
            return "–" if x is None else format(x, fmt)

        def pct(x):
            return "–" if x is None else f"{x:.1f}%"

        def per_node(share):
            if not share:
                return "–"
            return " / ".join(f"{share[ip]:.1f}" + ("*" if ip == slow_ip else "")
                              for ip in self.slow_fake.addresses)

        lines = [
            "",
            f"## One slow node: {slow_ip} answers `POST /` {a.slow_node:g} ms late",
            "",
            f"A second fake-node on {', '.join(self.slow_fake.addresses)} (port "
            f"{self.slow_fake.port}), the third delayed with `--delay {slow_ip}={a.slow_node:g}`: "
            "its DynamoDB answers come that much later, its health checks and `/localnodes` "
            "answers at once (alive, but slow). Each Envoy variant is started anew against it, "
            f"warmed up ({a.warmup} s), then measured in the same interleaved rounds as above.",
            "",
            f"| Envoy --concurrency | variant | balancing | req/s ({a.connections} conns, median) "
            "| vs static-rr | p50 µs (1 conn) | p99 µs (1 conn) | mean µs (1 conn) "
            f"| slow node's share ({a.connections} conns) | slow node's share (1 conn) "
            f"| % per node ({a.connections} conns; * slow) | Envoy CPU µs/req |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['concurrency']} | {r['variant']} | {r['balancing']} | {f(r['rps'], ',.0f')} "
                f"| {f(r['ratio'], '.2f') + 'x' if r['ratio'] is not None else '–'} "
                f"| {f(r['p50_us'], ',.0f')} | {f(r['p99_us'], ',.0f')} | {f(r['mean_us'], ',.0f')} "
                f"| {pct(r['slow_node_share_pct']['throughput'])} "
                f"| {pct(r['slow_node_share_pct']['latency'])} "
                f"| {per_node(r['share_pct']['throughput'])} "
                f"| {f(r['envoy_cpu_us_per_request'], '.1f')} |")
        lines.append("")
        for k in comparisons:
            rr = k["rps_ratio_per_round"]
            sv, sw = k["slow_node_share_pct"], k["against_slow_node_share_pct"]
            lines.append(
                f"- concurrency {k['concurrency']}, {k['variant']} vs {k['against']}: req/s "
                + (f"{k['rps_ratio']:.2f}x" if k["rps_ratio"] is not None else "–")
                + (f" (per round {min(rr):.2f}x to {max(rr):.2f}x)" if rr else "")
                + f"; p50 {f(k['p50_us_diff'], '+,.0f')} µs, p99 {f(k['p99_us_diff'], '+,.0f')} µs, "
                f"mean {f(k['mean_us_diff'], '+,.0f')} µs (1 conn); slow node's share "
                f"{pct(sv['throughput'])} vs {pct(sw['throughput'])} ({a.connections} conns), "
                f"{pct(sv['latency'])} vs {pct(sw['latency'])} (1 conn)")
        even = 100 / NODES
        lines += [
            "",
            f"Throughput runs are closed loop: each of the {a.connections} connections sends its "
            "next request only when the last one is answered. With a node that takes "
            f"{a.slow_node:g} ms they are latency-bound, not CPU-bound: req/s is about "
            f"{a.connections} / (mean latency), so it says how often each balancer sends a "
            "request to the slow node. Round robin gives it every third request "
            f"({even:.1f}%) and every connection soon waits on it; a balancer that avoids it "
            "keeps the connections on the fast nodes and is bound by CPU again. The ratio "
            f"between the variants therefore depends on the connection count ({a.connections}, "
            "the same as with equal nodes, `--connections`): with more connections round "
            "robin's req/s grows in proportion. p50/p99/mean: one connection, one request at a "
            "time, every request timed by the wrk script (wrk's own percentiles add samples "
            "for its coordinated-omission correction, which with one slow node put its p50 at "
            "a fraction of the delay; they are kept in the JSON as `wrk_latency`). Shares: fake-node's counts of `POST /` per address over all "
            "of the variant's runs of that kind; '% per node' lists the addresses in order, "
            "the slow one last. Envoy CPU µs/req says little here: with round robin Envoy idles "
            "while the connections wait.",
        ]
        lines += [
            "",
            "### Per round, one slow node",
            "",
            "| conc | round | variant | req/s | slow node's share | others' CPU % | p50 µs "
            "| p99 µs | slow node's share (1 conn) | others' CPU % (1 conn) |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        by_key = {(m["concurrency"], m["round"], m["variant"], m["shape"]): m
                  for m in self.slow_measurements}

        def slow_share(m):
            return m and self.shares(m["per_node"]) and self.shares(m["per_node"])[slow_ip]

        for (c, rnd, v, shape), t in by_key.items():
            if shape != "throughput":
                continue
            lt = by_key.get((c, rnd, v, "latency"))
            lines.append(
                f"| {c} | {rnd} | {v} | {t['rps']:,.0f} | {pct(slow_share(t))} "
                f"| {self.others_pct(t):.0f} | {f(lt and lt['p50_us'], ',.0f')} "
                f"| {f(lt and lt['p99_us'], ',.0f')} | {pct(slow_share(lt))} "
                f"| {f(lt and self.others_pct(lt), '.0f')} |")
        return lines

    def quiet_pairs(self, concurrency: int, variant: str = "filter",
                    against: str = "static-rr") -> tuple[list[float], list[float]]:
        """Per-round variant/against req/s ratios and p50 differences (µs), only
        from rounds where neither run of the pair was disturbed by other processes."""
        return (self.paired(concurrency, variant, against, "throughput", "rps", self._ratio, True),
                self.paired(concurrency, variant, against, "latency", "p50_us", self._diff, True))

    @staticmethod
    def others_pct(m: dict) -> float:
        """CPU used by processes outside the benchmark during run ``m``, in % of one core."""
        return m["cpu_seconds"]["others"] / max(m["seconds"], 1e-9) * 100

    @staticmethod
    def comparison_markdown(comparisons: list[dict]) -> list[str]:
        """The table of PAIRS (filter vs baseline, ...), empty when none was measured."""
        if not comparisons:
            return []

        def rng(xs, fmt, suffix=""):
            if not xs:
                return "–"
            lo, hi = format(min(xs), fmt) + suffix, format(max(xs), fmt) + suffix
            return lo if lo == hi else f"{lo} to {hi}"

        def f(x, fmt):
            return "–" if x is None else format(x, fmt)

        lines = [
            "",
            "## Between the Wasm variants",
            "",
            "| Envoy --concurrency | comparison | req/s ratio | req/s ratio per round "
            "| Envoy CPU µs/req difference | per round | p50 µs difference (1 conn) | per round "
            "| module bytes |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for k in comparisons:
            size = "–"
            if k["module_bytes"] is not None and k["against_module_bytes"] is not None:
                size = (f"{k['module_bytes']:,} vs {k['against_module_bytes']:,} "
                        f"({k['module_bytes'] - k['against_module_bytes']:+,})")
            lines.append(
                f"| {k['concurrency']} | {k['variant']} vs {k['against']} "
                f"| {f(k['rps_ratio'], '.3f')}{'x' if k['rps_ratio'] is not None else ''} "
                f"| {rng(k['rps_ratio_per_round'], '.3f', 'x')} "
                f"| {f(k['envoy_cpu_us_per_request_diff'], '+.1f')} "
                f"| {rng(k['envoy_cpu_us_per_request_diff_per_round'], '+.1f')} "
                f"| {f(k['p50_us_diff'], '+.0f')} | {rng(k['p50_us_diff_per_round'], '+.0f')} "
                f"| {size} |")
        lines.append("")
        for k in comparisons:
            qr, qa = k["rps_ratio_quiet"], k["p50_us_diff_quiet"]
            lines.append(f"- concurrency {k['concurrency']}, {k['variant']} vs {k['against']}, quiet "
                         f"rounds only: req/s ratio "
                         + (f"{median(qr):.3f}x over {len(qr)} round(s)" if qr else "no quiet round")
                         + "; p50 difference "
                         + (f"{median(qa):+.0f} µs over {len(qa)} round(s)" if qa else "no quiet round"))
        lines += [
            "",
            "req/s ratio: median req/s of the first variant / median req/s of the second (per "
            "round: the two runs of the same round); Envoy CPU µs/req and p50 difference: "
            "first − second (medians; per round: same round). Below 1.00x, or a positive "
            "difference, means the first variant is slower.",
        ]
        return lines

    def markdown(self, rows: list[dict], comparisons: list[dict] | None = None,
                 slow_rows: list[dict] | None = None, slow_comparisons: list[dict] | None = None) -> str:
        a = self.args
        comparisons = comparisons or []
        configured = []
        for v, keys in self.filter_keys.items():
            if v == "filter":
                configured.append("- filter variant: envoy/envoy.yaml's filter configuration"
                                  + (f" with {self.keys_text(keys)} set" if keys else ""))
            else:
                configured.append(f"- {v} variant: the filter variant's module and configuration"
                                  + (f" with {self.keys_text(keys)} set" if keys else ""))
        if self.slow_fake is not None:
            ip = self.slow_fake.addresses[SLOW_NODE_INDEX]
            configured.append(f"- slow-node scenario: fake-node on {', '.join(self.slow_fake.addresses)}, "
                              f"port {self.slow_fake.port}, `POST /` on {ip} answered "
                              f"{a.slow_node:g} ms late (see \"One slow node\")")

        def f(x, fmt, empty="–"):
            return empty if x is None else format(x, fmt)

        lines = [
            "# alternator-lb: Envoy with the filter vs. Envoy round robin",
            "",
            f"- date: {self.started.strftime('%Y-%m-%d %H:%M:%S UTC')}; run time {self.elapsed:.0f} s",
            f"- machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
            f"{cpu_model()}; Linux {platform.release()}; load average before {self.load_before}, "
            f"after {self.load_after}",
            f"- Envoy {envoy_version()} (`{envoy_binary()}`)",
            f"- wrk {wrk_version()}: throughput `-t{a.wrk_threads} -c{a.connections}` keep-alive, "
            f"latency `-t1 -c1 --latency`; `POST /` DynamoDB GetItem",
            f"- backend: fake-node on {', '.join(self.fake.addresses)}, port {self.fake.port}",
            f"- filter module: `{self.source_wasm}`, {self.wasm_bytes:,} bytes "
            f"(sha256 {self.wasm_sha256[:12]}), built {self.wasm_built:%Y-%m-%d %H:%M:%S UTC}; "
            f"tree at {self.revision}",
            *[f"- {v} module: {self.modules[v].describe()}"
              for v in ("baseline", "floor", "static-rr") if v in self.modules],
            *configured,
            f"- {a.rounds} round(s) x {a.duration} s per measurement, interleaved; "
            f"{a.warmup} s warm-up per variant; medians over rounds",
            f"- command: `{self.command}`",
            "",
            "| Envoy --concurrency | variant | req/s (median) | vs static-rr | p50 µs (1 conn) "
            "| p99 µs (1 conn) | added p50 µs | Envoy CPU µs/req | Envoy VmRSS MiB | spread over nodes "
            "| module bytes |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['concurrency']} | {r['variant']} | {f(r['rps'], ',.0f')} "
                f"| {f(r['ratio'], '.2f') + 'x' if r['ratio'] is not None else '–'} "
                f"| {f(r['p50_us'], '.0f')} | {f(r['p99_us'], '.0f')} "
                f"| {f(r['added_p50_us'], '+.0f')} | {f(r['envoy_cpu_us_per_request'], '.1f')} "
                f"| {f(r['rss_mib'], '.1f')} "
                f"| {f(r['spread_pct'], '.2f') + '%' if r['spread_pct'] is not None else '–'} "
                f"| {f(r['module_bytes'], ',')} |")
        lines.append("")
        for lv in self.levels:
            c = lv["concurrency"]
            for v in self.envoy_variants:
                if v == "static-rr":
                    continue
                vr = next(r for r in rows if r["concurrency"] == c and r["variant"] == v)
                rr = vr["ratio_per_round"]
                ad = vr["added_p50_per_round_us"]
                if rr and ad:
                    lines.append(f"- concurrency {c}: {v}/static-rr per round {min(rr):.2f}x–"
                                 f"{max(rr):.2f}x (median {median(rr):.2f}x); added p50 per round "
                                 f"{min(ad):+.0f} to {max(ad):+.0f} µs (median {median(ad):+.0f} µs); "
                                 f"Wasm VMs in the {v}'s Envoy: {lv['wasm_vms_by_variant'].get(v)}")
                qr, qa = self.quiet_pairs(c, v)
                lines.append(f"- concurrency {c}, quiet rounds only (others' CPU ≤ {BUSY_PCT}% in both "
                             f"runs of the pair): {v}/static-rr "
                             + (f"{median(qr):.2f}x over {len(qr)} round(s)" if qr else "no quiet round")
                             + "; added p50 "
                             + (f"{median(qa):+.0f} µs over {len(qa)} round(s)" if qa
                                else "no quiet round"))
        busy = [m for m in self.measurements if self.others_pct(m) > BUSY_PCT]
        lines.append(f"- other processes used more than {BUSY_PCT}% of a core during {len(busy)} of "
                     f"{len(self.measurements)} runs" + (": those rounds are disturbed, see 'Per round'"
                                                          if busy else ""))
        lines += [
            "",
            "req/s: throughput runs; p50/p99: single-connection runs (wrk's latency, which "
            "includes wrk and fake-node); added p50 = p50(variant) − p50(static-rr); Envoy CPU "
            "µs/req: Envoy's user+system CPU time during a throughput run / requests; VmRSS "
            "after the rounds; spread: largest deviation of a node's request count from the "
            "mean, in %, over all of the variant's runs; module bytes: the size of the Wasm "
            "module the variant's Envoy loads.",
            *self.comparison_markdown(comparisons),
            *self.slow_markdown(slow_rows or [], slow_comparisons or []),
            "",
            "## Per round",
            "",
            "| conc | round | variant | req/s | Envoy CPU µs/req | Envoy workers' connections "
            "| others' CPU % | p50 µs | p99 µs | req/s (1 conn) | others' CPU % (1 conn) |",
            "|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        by_key = {(m["concurrency"], m["round"], m["variant"], m["shape"]): m for m in self.measurements}
        for (c, rnd, v, shape), t in by_key.items():
            if shape != "throughput":
                continue
            lt = by_key.get((c, rnd, v, "latency"))
            others = self.others_pct(t)
            split = "/".join(str(n) for n in t["envoy_worker_connections"].values()) or "–"
            lines.append(
                f"| {c} | {rnd} | {v} | {t['rps']:,.0f} | {f(t['envoy_cpu_us_per_request'], '.1f')} "
                f"| {split} | {others:.0f} | {f(lt and lt['p50_us'], '.0f')} "
                f"| {f(lt and lt['p99_us'], '.0f')} | {f(lt and lt['rps'], ',.0f')} "
                f"| {f(lt and self.others_pct(lt), '.0f')} |")
        lines.append("")
        lines.append("others' CPU %: CPU time used on the machine by processes other than Envoy, "
                     "fake-node, wrk and this script during that run, in % of one core (the idle "
                     "Envoys of the other variants count here too, a fraction of 1% each).")
        if self.errors:
            lines += ["", "**Errors:** " + "; ".join(self.errors)]
        if self.count_warnings:
            lines += ["", "Count mismatches (fake-node vs. wrk): " + "; ".join(self.count_warnings)]
        return "\n".join(lines) + "\n"

    def write(self) -> tuple[Path, Path]:
        rows = self.summary()
        comparisons = self.comparisons(rows)
        slow_rows = self.slow_summary() if self.slow_fake is not None else []
        slow_comparisons = self.slow_comparisons(slow_rows) if self.slow_fake is not None else []
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        md = self.markdown(rows, comparisons, slow_rows, slow_comparisons)
        out.write_text(md)
        js = out.with_suffix(".json")
        js.write_text(json.dumps({
            "date": self.started.isoformat(timespec="seconds"),
            "run_seconds": self.elapsed,
            "command": self.command,
            "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
                        "loadavg_before": self.load_before, "loadavg_after": self.load_after},
            "envoy_version": envoy_version(), "wrk_version": wrk_version(),
            "wasm_bytes": self.wasm_bytes, "wasm_sha256": self.wasm_sha256,
            "wasm_built": self.wasm_built.isoformat(timespec="seconds"),
            "modules": {v: m.as_json() for v, m in self.modules.items()},
            "source_revision": self.revision,
            "settings": {k: v for k, v in vars(self.args).items() if k != "out"},
            "backend": {"addresses": self.fake.addresses, "port": self.fake.port},
            "summary": rows, "comparisons": comparisons, "levels": self.levels,
            "measurements": self.measurements,
            "filter_variants": self.filter_keys,
            "slow_node": None if self.slow_fake is None else {
                "delay_ms": self.args.slow_node,
                "address": self.slow_fake.addresses[SLOW_NODE_INDEX],
                "backend": {"addresses": self.slow_fake.addresses, "port": self.slow_fake.port},
                "summary": slow_rows, "comparisons": slow_comparisons, "levels": self.slow_levels,
                "measurements": self.slow_measurements,
            },
            "errors": self.errors, "count_warnings": self.count_warnings,
        }, indent=1))
        print()
        print(md)
        print(f"written: {out} and {js}")
        return out, js


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2, got {text!r}")
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return levels


def parse_filter_variant(text: str) -> tuple[str, dict]:
    """``NAME[:KEY=VALUE,...]`` of --filter-variant: the variant's name and the
    filter configuration keys it changes.  A VALUE is read as JSON when it is
    JSON (``500``, ``true``, ``["a","b"]``), else taken as a string
    (``round_robin``); commas split only before a ``KEY=``, so a JSON list
    stays whole."""
    name, _, rest = text.partition(":")
    if not VARIANT_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the name must be lowercase letters, digits and '-' (at most 16), "
            f"starting with a letter")
    if name in ALL_VARIANTS and name != "filter":
        raise argparse.ArgumentTypeError(f"{text!r}: {name} is a built-in variant")
    keys: dict = {}
    items = re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)", rest) if rest.strip() else []
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not CONFIG_KEY.fullmatch(key):
            raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, got {item!r}")
        if key in keys:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} given twice")
        try:
            keys[key] = json.loads(value)
        except ValueError:
            keys[key] = value.strip()
    return name, keys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--static-with-wasm", help="give the static-rr variant this Wasm module as an HTTP "
                                              "filter (bench/noop-filter: the floor of any Wasm filter)")
    p.add_argument("--floor-wasm", metavar="PATH",
                   help="add the 'floor' variant: static-rr's configuration plus the Wasm filter "
                        "with this module (bench/noop-filter: the floor of any Wasm filter), "
                        "measured alongside plain static-rr")
    p.add_argument("--baseline-wasm", metavar="PATH",
                   help="add the 'baseline' variant: the filter's configuration with this module "
                        "(an earlier build; scripts/bench --baseline-rev REV builds one), reported "
                        "against the filter")
    p.add_argument("--wasm", help="the filter module to measure (default: the cargo release build); "
                                  "for comparing build variants")
    p.add_argument("--filter-variant", metavar="NAME[:KEY=VALUE,...]", action="append", default=[],
                   type=parse_filter_variant, dest="filter_variants",
                   help="repeatable: add the variant NAME, the filter variant's module and "
                        "configuration with these keys changed (e.g. "
                        "filter-rr:load_balancing=round_robin), measured in the same rounds and "
                        "reported against filter; NAME 'filter' changes the filter variant's own keys")
    p.add_argument("--balancing", action="store_true",
                   help="short for --filter-variant filter:load_balancing=least_request "
                        "--filter-variant filter-rr:load_balancing=round_robin: what least-request "
                        "costs against round robin, with equal nodes")
    p.add_argument("--slow-node", metavar="MS", type=float, nargs="?", const=SLOW_NODE_MS,
                   help=f"add the slow-node scenario (implies --balancing): the Envoy variants "
                        f"against a backend whose third node answers POST / MS ms late "
                        f"(default {SLOW_NODE_MS:g}); req/s, p50/p99 and each node's share")
    p.add_argument("--handoff-header", metavar="NAME",
                   help="experiment: the filter variant's cluster takes the node from this request "
                        "header (use_http_header); give a module that sets it with --wasm")
    p.add_argument("--duration", type=int, default=5,
                   help="seconds per measurement, whole seconds (wrk's -d) (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up seconds per variant (default 3)")
    p.add_argument("--concurrency", type=parse_levels, default=[1, 2],
                   help="Envoy --concurrency levels, comma-separated (default 1,2)")
    p.add_argument("--connections", type=int, default=16,
                   help="wrk keep-alive connections in the throughput runs (default 16)")
    p.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads in the throughput runs (default 1; see bench/README.md)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between the last run and the VmRSS reading (default 1)")
    p.add_argument("--out", default=str(REPO / "target" / "bench" / "compare.md"),
                   help="markdown report (default target/bench/compare.md); the JSON goes next to it")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round x 1 s per measurement, 1 s warm-up, every concurrency level")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.settle = 1, 1, 1, 0.2
    for opt in ("static_with_wasm", "floor_wasm", "baseline_wasm", "wasm"):
        path = getattr(args, opt)
        if path and not Path(path).is_file():
            p.error(f"--{opt.replace('_', '-')}: no such file: {path}")
    if args.handoff_header:
        global HANDOFF_HEADER
        HANDOFF_HEADER = args.handoff_header
    if args.rounds < 1 or args.duration < 1 or args.warmup < 1 or args.connections < 1:
        p.error("--rounds, --duration, --warmup and --connections must be at least 1")
    if args.slow_node is not None:
        if not 0 < args.slow_node <= 60_000:
            p.error("--slow-node: a delay from 0 to 60000 ms (e.g. 150)")
        args.balancing = True
    if args.balancing:
        given = {name for name, _ in args.filter_variants}
        for name, keys in BALANCING:
            if name in given:
                p.error(f"--balancing (also implied by --slow-node) defines the variant {name}: "
                        f"give it either with --filter-variant or with --balancing")
        args.filter_variants = [*BALANCING, *args.filter_variants]
    names = [name for name, _ in args.filter_variants]
    for name in set(names):
        if names.count(name) > 1:
            p.error(f"--filter-variant {name} given twice")

    missing = missing_prerequisites()
    if missing:
        print("missing, build or install first (scripts/bench does):\n  " + "\n  ".join(missing),
              file=sys.stderr)
        return 2
    raise_on_sigterm()
    bench = Compare(args)
    bench.command = " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable, REPO), *sys.argv])
    wrapper = os.environ.get("ALTERNATOR_LB_BENCH_COMMAND")  # set by scripts/bench
    if wrapper:
        bench.command = f"{wrapper.strip()}` → `{bench.command}"
    try:
        bench.run()
        bench.write()
    except KeyboardInterrupt:
        print("\ninterrupted; everything started is stopped", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - report, stop everything, exit 1
        bench.print_envoy_logs()
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        bench.stop()
    if bench.errors:
        print("ERRORS: " + "; ".join(bench.errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
