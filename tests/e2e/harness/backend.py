"""A real DynamoDB-compatible server (moto) as the shared storage backend.

Why: the simulated Alternator nodes must answer DynamoDB requests with real
DynamoDB semantics so that the real AWS SDK (boto3) can be used end to end,
but the harness must not implement any DynamoDB logic itself.  All nodes of
a simulated cluster forward verified requests to one moto server, so data
written through one node is visible through every other, as in a real
cluster.

The server runs as a subprocess in its own process group (so that a
terminal's Ctrl-C does not hit it directly and so that we can kill it along
with any children) and is always stopped by its PID.

Quirk worth knowing: moto's server (Werkzeug) answers every request with
``Connection: close``, so a "persistent" client connection to it is in fact
re-opened for every request.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .net import free_port, wait_for

#: The virtualenv's bin directory (where moto_server and envoy live).
VENV_BIN = Path(sys.executable).parent


def moto_server_path() -> str:
    """Path of the ``moto_server`` entry point next to the running Python."""
    p = VENV_BIN / "moto_server"
    if p.exists():
        return str(p)
    raise FileNotFoundError(f"moto_server not found in {VENV_BIN}; install moto[server]")


def stop_process_group(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Stop ``proc`` and its process group: SIGTERM, then SIGKILL after ``timeout``.

    ``proc`` must have been started with ``start_new_session=True`` so that
    its PID is also its process-group id; we signal that group by number,
    never by name, so nothing else on the machine is touched.  Returns the
    exit code (None if it could not be collected).  Safe to call twice.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
    else:
        # The leader exited by itself; children it left in the group (if
        # any) must still go.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return proc.returncode


class MotoBackend:
    """``moto_server -H 127.0.0.1 -p PORT`` as a managed subprocess.

    Usage::

        with MotoBackend() as backend:
            backend.url   # "http://127.0.0.1:PORT"
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 log_dir: str | os.PathLike | None = None, start_timeout: float = 20.0):
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="moto-"))
        self.log_path = self._log_dir / "moto.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "MotoBackend":
        """Start the server and wait until it answers HTTP.

        The port is chosen just before starting; if moto fails to bind it
        (another process took it in the meantime) we retry with another.
        """
        last_error: Exception | None = None
        fixed_port = self.port is not None
        for _ in range(1 if fixed_port else 3):
            if not fixed_port:
                self.port = free_port(self.host)
            try:
                self._start_once()
                return self
            except Exception as e:  # noqa: BLE001
                last_error = e
                self.stop()
        raise RuntimeError(f"moto_server did not start: {last_error}") from last_error

    def _start_once(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Keep moto from looking for real AWS settings of the user running
        # the tests; the credentials come from each request's signature.
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
                    "AWS_SHARED_CREDENTIALS_FILE"):
            env.pop(var, None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [moto_server_path(), "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            try:
                # A DynamoDB call proves the dynamodb backend is loaded.
                conn.request("POST", "/", body=b"{}", headers={
                    "X-Amz-Target": "DynamoDB_20120810.ListTables",
                    "Content-Type": "application/x-amz-json-1.0",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=probe/20200101/"
                                     "us-east-1/dynamodb/aws4_request, "
                                     "SignedHeaders=host, Signature=0",
                })
                resp = conn.getresponse()
                resp.read()
                return resp.status == 200
            finally:
                conn.close()

        try:
            wait_for(answers, timeout=self.start_timeout, interval=0.05,
                     message=f"moto_server on {self.url}")
        except TimeoutError as e:
            if self.proc.poll() is not None:
                # Exited: surface the RuntimeError from answers() with the log.
                raise RuntimeError(f"moto_server exited early:\n{self.log_tail()}") from e
            raise

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server by PID (SIGTERM, then SIGKILL).  Idempotent."""
        if self.proc is not None:
            stop_process_group(self.proc)

    def reset(self) -> None:
        """Drop all tables (moto's ``/moto-api/reset``)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        finally:
            conn.close()

    def __enter__(self) -> "MotoBackend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # last resort; fixtures stop explicitly
        try:
            if self.proc is not None and self.proc.poll() is None:
                stop_process_group(self.proc, timeout=1)
        except Exception:  # noqa: BLE001
            pass


__all__ = ["MotoBackend", "moto_server_path", "stop_process_group", "VENV_BIN"]
