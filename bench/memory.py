#!/usr/bin/env python3
"""Envoy's resident memory over a million requests through the alternator-lb filter.

Requirement checked: over one million requests through Envoy with the filter,
Envoy's resident memory after warm-up grows by less than 5%.

What it does:

1. starts ``fake-node`` (bench/fake-node, a fast native fake Alternator
   cluster) on three addresses of a reserved loopback block, one port;
2. starts Envoy (concurrency 2) with the shipped ``envoy/envoy.yaml``
   (via tests/e2e/harness/filter_config.envoy_config: the same listener, Wasm filter
   and ORIGINAL_DST clusters), seeds = the first node, port = fake-node's;
3. waits for the filter's log line ``discovered 3 nodes``;
4. warms up (~100k requests), samples Envoy's VmRSS, then drives at least
   ``--requests`` more requests in wrk chunks of a few seconds (keep-alive,
   ``POST /`` with a GetItem-like body), sampling VmRSS after each chunk;
5. prints a table and the verdict, and how the requests spread over the
   three nodes (fake-node's counts).

Exit status: 0 if RSS grew by less than 5% and every request got a 2xx;
1 otherwise; 2 if something needed is missing (the binaries, wrk).

It builds nothing: build first with

    scripts/build                                    # the filter
    cargo build --release -p alternator-lb-fake-node # bench/fake-node

Run with ``.venv/bin/python bench/memory.py [--requests N] [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (FAKE_NODE, NODES, FakeNode, REPO, WASM, WRK_SCRIPT, WrkResult,  # noqa: E402,F401
                    missing_prerequisites, mib, proc_memory, raise_on_sigterm)

from harness.filter_config import envoy_config  # noqa: E402  (common put tests/e2e on sys.path)
from harness.backend import stop_process_group  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.net import free_port, wait_for  # noqa: E402

RQ_TOTAL = "http.dynamodb.downstream_rq_total"
ROUTED = "wasmcustom.alternator_lb.requests_routed"  # the filter's own counter


def envoy_heap(envoy: EnvoyProcess) -> int | None:
    """Bytes allocated through Envoy's tcmalloc (admin /memory), or None."""
    try:
        status, body = envoy.admin_get("/memory")
        return int(json.loads(body)["allocated"]) if status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="alternator-lb-bench-"))
        self.script = self.workdir / "getitem.lua"
        self.script.write_text(WRK_SCRIPT)
        self.fake: FakeNode | None = None
        self.envoy: EnvoyProcess | None = None
        self.listener_port = 0
        self.wrk: subprocess.Popen | None = None
        self.wrk_requests = 0
        self.non_2xx = 0
        self.socket_errors = 0
        self.wrk_seconds = 0.0

    # -- processes -----------------------------------------------------------
    def start_envoy(self) -> None:
        # The module as built (this benchmark builds nothing and has checked
        # that WASM exists), not envoy_config()'s default, which builds it.
        self.listener_port = free_port()
        config = envoy_config(listener_port=self.listener_port, admin_port=free_port(),
                              seeds=[self.fake.addresses[0]], port=self.fake.port, wasm=WASM)
        self.envoy = EnvoyProcess(config, concurrency=self.args.concurrency,
                                  workdir=self.workdir / "envoy")
        wait_for(lambda: f"discovered {NODES} nodes" in self.envoy.log_text(), timeout=20,
                 message=f"the filter's 'discovered {NODES} nodes' log line")

    def run_wrk(self, seconds: float) -> WrkResult:
        cmd = ["wrk", "-t", str(self.args.threads), "-c", str(self.args.connections),
               "-d", f"{max(1, round(seconds))}s", "-s", str(self.script),
               f"http://127.0.0.1:{self.listener_port}/"]
        self.wrk = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = self.wrk.communicate(timeout=seconds + 60)
        finally:
            stop_process_group(self.wrk)
        if self.wrk.returncode != 0:
            raise RuntimeError(f"wrk failed ({self.wrk.returncode}):\n{out}")
        r = WrkResult(out)
        self.wrk_requests += r.requests
        self.non_2xx += r.non_2xx
        self.socket_errors += r.socket_errors
        self.wrk_seconds += r.seconds
        return r

    def drive(self, requests: int, chunk_seconds: float, rate_guess: float) -> tuple[int, float]:
        """At least ``requests`` requests in wrk runs of at most ``chunk_seconds``."""
        done, rate = 0, rate_guess
        while done < requests:
            seconds = min(chunk_seconds, max(1.0, (requests - done) / rate * 1.05))
            r = self.run_wrk(seconds)
            done += r.requests
            rate = max(r.rate, 100.0)
        return done, rate

    def sample(self) -> tuple[dict[str, int], int | None, int]:
        time.sleep(self.args.settle)
        return proc_memory(self.envoy.pid), envoy_heap(self.envoy), int(self.envoy.stat(RQ_TOTAL))

    def stop(self) -> None:
        for p in (self.wrk,):
            if p is not None:
                stop_process_group(p)
        if self.envoy is not None:
            self.envoy.stop()
        if self.fake is not None:
            self.fake.stop()

    # -- the benchmark -------------------------------------------------------
    def run(self) -> int:
        a = self.args
        t0 = time.monotonic()
        self.fake = FakeNode()
        self.start_envoy()
        start_mem = proc_memory(self.envoy.pid)
        print(f"fake-node on {', '.join(self.fake.addresses)} port {self.fake.port}; Envoy pid "
              f"{self.envoy.pid} (concurrency {a.concurrency}) on 127.0.0.1:{self.listener_port}; "
              f"wrk -t{a.threads} -c{a.connections}")
        print(f"Envoy RSS at start (nodes discovered, no request yet): {mib(start_mem['VmRSS']):.1f} MiB")

        warm, rate = self.drive(a.warmup, a.chunk_seconds, 5000.0)
        mem0, heap0, envoy_rq0 = self.sample()
        counts0 = self.fake.counts()
        routed0 = int(self.envoy.stat(ROUTED))
        wrk0 = self.wrk_requests
        rss0 = mem0["VmRSS"]
        print(f"warm-up: {warm:,} requests\n")

        header = (f"{'requests':>10} {'envoy rq':>10} {'req/s':>8} {'RSS MiB':>8} {'growth':>8} "
                  f"{'anon MiB':>8} {'heap MiB':>8}")
        print(header)
        print("-" * len(header))

        def row(n: int, envoy_rq: int, r: float | None, mem: dict[str, int], heap: int | None) -> None:
            growth = (mem["VmRSS"] - rss0) / rss0 * 100
            heap_s = f"{heap / 2**20:8.1f}" if heap is not None else f"{'?':>8}"
            rate_s = f"{r:8.0f}" if r is not None else f"{'':>8}"
            print(f"{n:>10,} {envoy_rq:>10,} {rate_s} {mib(mem['VmRSS']):8.1f} {growth:+7.2f}% "
                  f"{mib(mem['RssAnon']):8.1f} {heap_s}", flush=True)

        row(0, 0, None, mem0, heap0)
        done = 0
        rates = []
        mem = mem0
        envoy_rq = envoy_rq0
        while done < a.requests:
            seconds = min(a.chunk_seconds, max(1.0, (a.requests - done) / rate * 1.05))
            r = self.run_wrk(seconds)
            done += r.requests
            rate = max(r.rate, 100.0)
            rates.append((r.requests, r.seconds))
            mem, heap, envoy_rq = self.sample()
            row(done, envoy_rq - envoy_rq0, r.rate, mem, heap)

        counts1 = self.fake.counts()
        routed = int(self.envoy.stat(ROUTED)) - routed0
        rss1 = mem["VmRSS"]
        growth = (rss1 - rss0) / rss0 * 100
        total_rate = sum(n for n, _ in rates) / max(sum(s for _, s in rates), 1e-9)
        envoy_measured = envoy_rq - envoy_rq0
        print()
        print(f"measured: {done:,} requests completed (wrk), {envoy_measured:,} counted by Envoy "
              f"({RQ_TOTAL}), {routed:,} routed by the filter; {total_rate:,.0f} req/s on average; "
              f"peak RSS (VmHWM) {mib(mem['VmHWM']):.1f} MiB")
        # wrk leaves out the requests in flight when a run stops (at most one
        # per connection per run); Envoy counts them.
        runs = len(rates)
        slack = a.connections * runs
        if not 0 <= envoy_measured - done <= slack:
            print(f"WARNING: Envoy counted {envoy_measured - done:+,} requests more than wrk "
                  f"(expected 0 to {slack})")

        print("\nspread over the nodes (POST / answered by fake-node after warm-up):")
        per_node = {ip: counts1[ip]["dynamodb"] - counts0[ip]["dynamodb"] for ip in self.fake.addresses}
        total = sum(per_node.values()) or 1
        for ip, n in per_node.items():
            print(f"  {ip:<16} {n:>10,}  {n / total * 100:5.2f}%")
        even = total / len(per_node)
        worst = max(abs(n - even) / even * 100 for n in per_node.values())
        print(f"  largest deviation from an even share: {worst:.2f}%; fake-node total {total:,} "
              f"(Envoy: {envoy_measured:,})")
        probes = {ip: (counts1[ip]["localnodes"], counts1[ip]["health"]) for ip in self.fake.addresses}
        print("  /localnodes and GET / calls from the filter, whole run: "
              + ", ".join(f"{ip} {l}/{h}" for ip, (l, h) in probes.items()))

        failed = []
        if self.non_2xx:
            failed.append(f"{self.non_2xx:,} non-2xx responses")
        if self.socket_errors:
            failed.append(f"{self.socket_errors:,} socket errors")
        if growth >= 5.0:
            failed.append(f"RSS grew {growth:.2f}% (limit 5%)")
        print(f"\nwhole run: {self.wrk_requests:,} requests including {wrk0:,} of warm-up, "
              f"{self.non_2xx} non-2xx, {self.socket_errors} socket errors; "
              f"{time.monotonic() - t0:.0f} s; {datetime.date.today().isoformat()}")
        print(f"RSS after warm-up {mib(rss0):.1f} MiB, after {done:,} requests {mib(rss1):.1f} MiB: "
              f"growth {growth:.2f}% (limit 5%)")
        if failed:
            print("FAIL: " + "; ".join(failed))
            return 1
        print("PASS")
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1_000_000,
                   help="requests to drive after warm-up (default 1,000,000)")
    p.add_argument("--warmup", type=int, default=100_000, help="warm-up requests (default 100,000)")
    p.add_argument("--quick", action="store_true",
                   help="short smoke run: 50,000 requests after 20,000 of warm-up, 1 s chunks")
    p.add_argument("--chunk-seconds", type=float, default=5.0, help="length of one wrk run (default 5)")
    p.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (default 16)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (default 2)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between the end of a chunk and the RSS sample (default 1)")
    args = p.parse_args()
    if args.quick:
        args.requests, args.warmup, args.chunk_seconds = 50_000, 20_000, 1.0

    missing = missing_prerequisites()
    if missing:
        print("missing, build or install first:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2

    raise_on_sigterm()  # stop everything started, as on Ctrl-C
    bench = Bench(args)
    try:
        return bench.run()
    except BaseException:
        if bench.envoy is not None:
            print(f"Envoy log: {bench.envoy.log_path}\n{bench.envoy.log_tail(20)}", file=sys.stderr)
        raise
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
