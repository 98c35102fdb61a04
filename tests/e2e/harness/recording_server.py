"""A plain HTTP service that is not Alternator: it records every request it
receives (method, path, headers in order, body) and answers 200 with a
body naming the path.

Why: a filter that shares a listener (``hosts``) must leave other hosts'
requests alone; this is the other host's backend, where a test reads what
actually arrived. It listens on its own reserved loopback address, in this
process's threads, and is stopped by :meth:`RecordingServer.close` (or
leaving its ``with`` block).
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import net

#: The Server header of its answers, which a client should see unchanged.
SERVER = "other-service (test)"


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # keep-alive requests would stall ~40 ms

    def log_message(self, format, *args):  # noqa: A002 - signature from base class
        pass

    def version_string(self) -> str:
        return SERVER

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        # Header bytes as received (http.server decodes them as latin-1).
        headers = [(k, v) for k, v in self.headers.items()]
        self.server.record(Received(self.command, self.path, headers, body))
        answer = f"other service: {self.command} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]):
        self.lock = threading.Lock()
        self.received: list[Received] = []
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own would look the address up in DNS (getfqdn).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def record(self, r: Received) -> None:
        with self.lock:
            self.received.append(r)


class RecordingServer:
    """Started on construction; ``address`` and ``port`` say where."""

    def __init__(self):
        self._block = net.reserve_loopback_block()
        try:
            self._server = _Server((self._block.address(1), 0))
        except BaseException:
            self._block.release()
            raise
        self.address, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="other-service")
        self._thread.start()

    @property
    def received(self) -> list[Received]:
        with self._server.lock:
            return list(self._server.received)

    def close(self) -> None:
        """Stops serving and gives the address back. Idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._thread = None
            self._block.release()

    def __enter__(self) -> "RecordingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
