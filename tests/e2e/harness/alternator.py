"""A simulated ScyllaDB Alternator cluster, running in-process.

Why: the filter under test discovers nodes with ``GET /localnodes`` and
spreads DynamoDB requests over them.  Its tests need a cluster they can
*control* while traffic flows: add and remove members, kill a node so that
connections are refused and in-flight ones reset, make ``/localnodes``
misbehave, and count exactly which node served what.  A real ScyllaDB
cluster is far too heavy for that, so each node here is a small HTTP/1.1
server in a thread of the test process, and the test drives it directly.

What is real:

* every node verifies AWS SigV4 like Alternator with authorization enforced
  (:mod:`.sigv4`), so a proxy that alters Host, a signed header or the body
  is caught, with a recorded reason;
* the DynamoDB API itself is served by a real DynamoDB-compatible server
  (moto, see :mod:`.backend`) shared by all nodes, so data written through
  one node is read back through another and the real AWS SDK works
  unmodified; the harness implements no DynamoDB logic;
* all nodes listen on one common port on distinct loopback addresses, and
  ``/localnodes`` answers bare IP strings, as Alternator does, so the filter
  has to combine learned addresses with the configured port.

Endpoints of each node:

* ``GET /localnodes[?dc=NAME][&rack=NAME]``: JSON array of the IPs of the
  nodes currently *listed* as members, restricted to the asked node's
  datacenter (or ``dc``) and optionally to ``rack``; unknown dc or rack
  gives ``[]``; order shuffled on every answer.
* ``GET /``: ``200 healthy: <Host header>``.
* ``POST /``: the DynamoDB API (SigV4 verified, then relayed to moto).

Answers carry no ``Server`` header, as Alternator's by default, unless the
cluster's ``server_header`` names one.

Listing and serving are independent on purpose: ``stop_node`` kills a node
that stays listed (the window in which Alternator still lists a node that
died), ``remove_node``/``unlist_node`` drops a node from ``/localnodes``
while it keeps serving (a decommission the client has not noticed yet).
``drop_next_requests`` makes a node that stays up end a few connections
without answering (a reset after the connection was made).
``set_answer_delay`` makes a node's DynamoDB answers late: by a fixed
delay, by a random one within a range, and now and then by a spike, drawn
from a seeded generator so that a benchmark run can be repeated.
"""

from __future__ import annotations

import collections
import http.client
import json
import random
import socket
import ssl
import struct
import sys
import traceback
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

from . import net, sigv4

DEFAULT_ACCESS_KEY = "alternator"
DEFAULT_SECRET_KEY = "secret_pass"
DEFAULT_DC = "dc1"
DEFAULT_RACK = "rack1"

#: Modes for ``/localnodes`` answers, see :meth:`SimulatedCluster.set_localnodes_mode`.
LOCALNODES_MODES = ("normal", "garbage", "error", "empty", "slow", "bad_entries", "not_array")

#: Body sent in ``garbage`` mode: 200, Content-Type JSON, but not JSON.
GARBAGE_BODY = b"<html><body>this is not JSON [\"127.0.0.1\"</body></html>"

#: Invalid entries mixed with the real addresses in ``bad_entries`` mode.
BAD_ENTRIES: list[Any] = ["not-an-ip", 42, None, "", "300.1.2.3", True, ["10.0.0.1"], {"ip": "10.0.0.2"}]

_DYNAMODB_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_SIGNATURE_MESSAGES = {
    sigv4.INVALID_SIGNATURE: "The request signature we calculated does not match the signature "
                             "you provided. Check your AWS Secret Access Key and signing method.",
    sigv4.UNRECOGNIZED_CLIENT: "The security token included in the request is invalid.",
    sigv4.MISSING_TOKEN: "Request is missing Authentication Token",
}

#: Hop-by-hop headers (RFC 9110 7.6.1) plus the framing headers we recompute.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "content-length", "expect",
})

#: How many DynamoDB request records to keep (counters are unbounded).
MAX_RECORDS = 20000


@dataclass
class SimulatedNode:
    """State of one node.  Mutated only under the cluster's lock."""

    address: str
    dc: str
    rack: str
    listed: bool = True
    localnodes_mode: str = "normal"
    slow_delay: float = 2.0
    drop_next: int = 0          # DynamoDB requests still to drop unanswered
    drop_how: str = "reset"
    answer_delay: float = 0.0   # seconds added to every DynamoDB answer
    # Drawn per DynamoDB answer, on top of answer_delay (set_answer_delay):
    answer_jitter: tuple[float, float] = (0.0, 0.0)   # uniform in [low, high) seconds
    spike_probability: float = 0.0   # the chance an answer is spike_delay late instead
    spike_delay: float = 0.0
    server: "_NodeServer | None" = field(default=None, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.server is not None


@dataclass
class DynamoRequest:
    """One DynamoDB request that passed signature verification."""

    timestamp: float            # time.monotonic()
    node: str                   # address of the node that served it
    operation: str              # from X-Amz-Target, e.g. "PutItem"
    headers: list[tuple[str, str]]
    body: bytes = field(repr=False, default=b"")
    status: int | None = None   # status relayed to the client (filled in later)
    delay: float = 0.0          # seconds its answer was held back (set_answer_delay)
    spike: bool = False         # whether that delay was a spike


#: A hook sees each verified request before it is forwarded.  It may return
#: ``None`` (forward normally) or ``(status, headers, body)`` to answer that
#: instead, e.g. to simulate overload on one node.
RequestHook = Callable[[DynamoRequest], "tuple[int, dict[str, str] | list[tuple[str, str]], bytes] | None"]


class _NodeServer(ThreadingHTTPServer):
    """One node's HTTP server, taking over an already listening socket.

    It tracks every accepted connection so that :meth:`abort` can reset them
    all, which ``socketserver`` cannot do by itself.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, node: SimulatedNode, cluster: "SimulatedCluster"):
        # bind_and_activate=False: no bind, and no slow getfqdn() either.
        super().__init__(sock.getsockname(), _NodeHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.node = node
        self.cluster = cluster
        self.stopping = threading.Event()
        self._conn_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self.tls_refused = 0   # TLS handshakes that failed (the client refused us)

    @property
    def aborting(self) -> bool:
        return self.stopping.is_set()

    def process_request(self, request, client_address):
        with self._conn_lock:
            if self.aborting:
                _reset(request)
                return
            self._conns.add(request)
            t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                 daemon=True, name=f"node-{self.node.address}-conn")
            self._handler_threads.add(t)
        t.start()

    def process_request_thread(self, request, client_address):
        try:
            tls = self.cluster.tls
            if tls is not None:
                raw = request
                # HTTPS like Alternator's alternator_https_port: the handshake
                # runs here, in the connection's thread; a client that
                # refuses the certificate just ends this connection.
                try:
                    request = tls(self.node.address).wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    _reset(raw)
                    with self._conn_lock:
                        self._conns.discard(raw)
                        self.tls_refused += 1
                    return
                with self._conn_lock:
                    self._conns.discard(raw)
                    self._conns.add(request)
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._handler_threads.discard(threading.current_thread())

    def shutdown_request(self, request):
        with self._conn_lock:
            self._conns.discard(request)
        if self.aborting:
            _reset(request)          # RST, no FIN first
        else:
            super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # Connection errors are expected (clients going away, aborts).
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, _Aborted)) or self.aborting:
            return
        self.cluster._record_error(self.node.address, exc)
        super().handle_error(request, client_address)

    def abort(self) -> None:
        """Stop accepting, close the listening socket, reset every connection.

        After this returns, connecting to the address is refused.  Handler
        threads blocked reading an idle keep-alive connection wake up at once
        (``SHUT_RD``) and close with ``SO_LINGER`` 0, so the peer receives a
        RST; handlers busy with a request drop their answer and do the same.
        """
        with self._conn_lock:
            self.stopping.set()      # no request is recorded from now on
        self.shutdown()              # serve_forever loop exits
        self.server_close()          # listening socket closed -> refused
        with self._conn_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            threads = list(self._handler_threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Aborted(Exception):
    """The node was stopped while this request was being handled."""


class _Dropped(Exception):
    """This request is to be dropped unanswered (``drop_next_requests``)."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


class _NodeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # else keep-alive requests stall ~40 ms
    server: _NodeServer
    server_version = "SimulatedAlternator"
    sys_version = ""

    _backend: http.client.HTTPConnection | None = None

    # -- plumbing --------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - signature from base class
        pass

    def finish(self):
        try:
            super().finish()
        finally:
            if self._backend is not None:
                self._backend.close()

    def _send(self, status: int, headers: Iterable[tuple[str, str]], body: bytes,
              reason: str | None = None) -> None:
        if self.server.aborting:
            raise _Aborted()
        self.send_response_only(status, reason)
        has_date = False
        for name, value in headers:
            if name.lower() == "date":
                has_date = True
            if name.lower() != "server":
                self.send_header(name, value)
        server = self.server.cluster.server_header
        if server is not None:
            self.send_header("Server", server)
        if not has_date:
            self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(body)))
        # Headers and body in one write: one segment for small answers.
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def _send_json(self, status: int, obj: Any, content_type: str = "application/json") -> None:
        self._send(status, [("Content-Type", content_type)], json.dumps(obj).encode())

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass         # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, fn) -> None:
        try:
            fn()
        except _Dropped as d:
            # No answer at all: the connection ends once the handler
            # returns, with a RST (no linger) or a FIN.
            self.close_connection = True
            if d.how == "reset":
                _reset(self.connection)
        except (_Aborted, ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # a harness bug: record it, answer 500, go on
            self.close_connection = True
            self.server.cluster._record_error(self.server.node.address, e)
            try:
                self._send_json(500, {"message": f"simulated node failed: {e!r}"})
            except Exception:  # noqa: BLE001
                pass

    # -- routes ------------------------------------------------------------
    def do_GET(self):
        self._dispatch(self._get)

    def do_POST(self):
        self._dispatch(self._post)

    def _get(self):
        url = urlsplit(self.path)
        if url.path == "/localnodes":
            self._localnodes(dict(parse_qsl(url.query, keep_blank_values=True)))
        elif url.path == "/":
            host = self.headers.get("Host", "")
            self._send(200, [("Content-Type", "text/plain; charset=utf-8")],
                       f"healthy: {host}".encode())
        else:
            self._send_json(404, {"error": f"no such path {url.path}"})

    def _localnodes(self, query: dict[str, str]) -> None:
        cluster, node = self.server.cluster, self.server.node
        cluster._record_localnodes(node.address, query)
        with cluster._lock:
            mode, delay = node.localnodes_mode, node.slow_delay
            body = cluster._localnodes_body
        if body is not None:
            self._send(200, [("Content-Type", "application/json")], body)
            return
        if mode == "slow":
            if self.server.stopping.wait(delay):
                raise _Aborted()
        if mode == "error":
            self._send_json(500, {"message": "simulated internal error"})
            return
        if mode == "garbage":
            self._send(200, [("Content-Type", "application/json")], GARBAGE_BODY)
            return
        ips = [] if mode == "empty" else cluster._members_for(node, query.get("dc"), query.get("rack"))
        random.shuffle(ips)
        if mode == "bad_entries":
            mixed: list[Any] = ips + BAD_ENTRIES
            random.shuffle(mixed)
            self._send_json(200, mixed)
        elif mode == "not_array":
            self._send_json(200, {"nodes": ips})
        else:
            self._send_json(200, ips)

    def _received_headers(self) -> list[tuple[str, str]]:
        # http.server decodes header bytes as latin-1, SigV4 signs UTF-8:
        # re-decode, keeping any invalid byte as a surrogate so that the
        # verifier hashes exactly the bytes received.
        return [(k, v.encode("latin-1").decode("utf-8", "surrogateescape"))
                for k, v in self.headers.items()]

    def _post(self):
        cluster, node = self.server.cluster, self.server.node
        url = urlsplit(self.path)
        body = self._read_body()
        how = cluster._take_drop(node.address)
        if how is not None:
            raise _Dropped(how)
        headers = self._received_headers()
        if url.path != "/":
            self._send_json(404, {"error": f"no such path {url.path}"})
            return
        result = sigv4.verify("POST", url.path, url.query, headers, body, cluster._secret_for)
        if not result.ok:
            cluster._record_signature_failure(node.address, result.reason)
            message = _SIGNATURE_MESSAGES.get(result.error_type, "") + f" ({result.reason})"
            self._send_json(400, {"__type": _DYNAMODB_ERROR_PREFIX + result.error_type,
                                  "message": message},
                            content_type="application/x-amz-json-1.0")
            return
        target = self.headers.get("X-Amz-Target", "")
        # Recorded only while the node is up: a request read just as the
        # node is stopped gets a reset, never an answer, and must not count
        # as served after stop_node() returned (abort() sets `stopping`
        # under the same lock).
        with self.server._conn_lock:
            if self.server.aborting:
                raise _Aborted()
            record = DynamoRequest(time.monotonic(), node.address, target.rpartition(".")[2],
                                   headers, body)
            hook = cluster._record_request(record)
        answer = hook(record) if hook else None
        if record.delay > 0:
            time.sleep(record.delay)
        if answer is None:
            if record.operation in _SERIALIZED_WRITES:
                # moto applies a read-modify-write (ADD, a condition) without
                # isolation from a concurrent one on the same item; Alternator
                # runs such writes as LWT, one at a time per partition.
                # Serializing the cluster's writes keeps that promise.
                with cluster._write_lock:
                    answer = self._forward(body)
            else:
                answer = self._forward(body)
        status, out_headers, out_body = answer
        if isinstance(out_headers, dict):
            out_headers = list(out_headers.items())
        record.status = status
        self._send(status, out_headers, out_body)

    def _forward(self, body: bytes):
        """Relay the request to the backend; return (status, headers, body)."""
        cluster = self.server.cluster
        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        # self.headers holds latin-1 strings, which http.client encodes back
        # to the exact bytes received.
        send = [(k, v) for k, v in self.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() not in connection_tokens]
        for attempt in (1, 2):
            reused = self._backend is not None and self._backend.sock is not None
            if self._backend is None:
                self._backend = http.client.HTTPConnection(cluster.backend_host, cluster.backend_port,
                                                           timeout=60)
            conn = self._backend
            try:
                conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
                for k, v in send:
                    conn.putheader(k, v)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ConnectionAbortedError) as e:
                conn.close()
                if reused and attempt == 1:
                    continue         # the backend closed an idle connection
                return self._backend_error(e)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                return self._backend_error(e)
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, out, data
        raise AssertionError("unreachable")

    def _backend_error(self, e: Exception):
        body = json.dumps({"__type": _DYNAMODB_ERROR_PREFIX + "InternalServerError",
                           "message": f"simulated node could not reach backend: {e!r}"}).encode()
        return 500, [("Content-Type", "application/x-amz-json-1.0")], body


#: Writes that may read before they write, serialized like Alternator's LWT.
_SERIALIZED_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem",
                      "TransactWriteItems"}


class SimulatedCluster:
    """A cluster of simulated Alternator nodes sharing one port and one backend.

    ``topology``, if given, is a list of ``(dc, rack)`` per node and sets the
    number of nodes (``n_nodes`` may then be omitted, or must agree); by
    default there are 3 nodes, all in ``dc1``/``rack1``.  Every control and
    counter method is thread-safe.  Use as a context manager, or call
    :meth:`close`.  ``delay_seed`` seeds the random answer delays of
    :meth:`set_answer_delay` (None: not reproducible).
    """

    def __init__(self, backend_url: str, n_nodes: int | None = None,
                 access_key: str = DEFAULT_ACCESS_KEY, secret_key: str = DEFAULT_SECRET_KEY,
                 topology: list[tuple[str, str]] | None = None,
                 addresses: list[str] | None = None, port: int | None = None,
                 tls: Callable[[str], ssl.SSLContext] | None = None,
                 delay_seed: int | str | None = 0):
        if topology is not None:
            if n_nodes is not None and n_nodes != len(topology):
                raise ValueError(f"n_nodes={n_nodes} but topology has {len(topology)} entries")
            n_nodes = len(topology)
        elif n_nodes is None:
            n_nodes = 3
        topology = topology or [(DEFAULT_DC, DEFAULT_RACK)] * n_nodes
        backend = urlsplit(backend_url)
        self.backend_url = backend_url
        self.backend_host = backend.hostname
        self.backend_port = backend.port or 80
        self.access_key = access_key
        self.secret_key = secret_key
        self.request_hook: RequestHook | None = None
        #: The Server header of every answer, like Alternator's
        #: ``alternator_http_response_server_header``; ``None``, Alternator's
        #: default, sends none (the backend's own is dropped too).
        self.server_header: str | None = None
        #: Serve HTTPS: node address -> the server context (certificate) it presents.
        self.tls = tls

        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._nodes: dict[str, SimulatedNode] = {}
        self._default_mode = ("normal", 2.0)
        self._default_delay: dict[str, Any] = {}   # set_answer_delay(None, ...) for added nodes
        self._delay_rng = random.Random(delay_seed)
        self._localnodes_body: bytes | None = None
        self._closed = False
        self._retired: list[_NodeServer] = []      # stopped servers, joined by close()
        self._errors: list[tuple[str, str]] = []   # not cleared by reset_counters
        self._init_counters()

        if addresses is not None:
            # Fixed addresses (the demo's 127.0.0.1-3:8000); tests use the
            # collision-free blocks below instead.
            if port is None or len(addresses) != n_nodes:
                raise ValueError("addresses needs a port and one address per node")
            bound = net.bind_fixed(addresses, port)
        else:
            bound = net.bind_common_port(n_nodes)
        self._block = bound.block
        self.port = bound.port
        try:
            for addr, sock, (dc, rack) in zip(bound.addresses, bound.sockets, topology):
                node = SimulatedNode(addr, dc, rack)
                self._nodes[addr] = node
                self._serve(node, sock)
        except BaseException:
            for s in bound.sockets:
                s.close()
            self.close()
            raise

    # -- introspection ---------------------------------------------------
    @property
    def addresses(self) -> list[str]:
        """Addresses of all nodes ever created (running or not, listed or not)."""
        with self._lock:
            return list(self._nodes)

    @property
    def nodes(self) -> list[SimulatedNode]:
        with self._lock:
            return list(self._nodes.values())

    def node(self, addr: str) -> SimulatedNode:
        with self._lock:
            try:
                return self._nodes[addr]
            except KeyError:
                raise KeyError(f"{addr} is not a node of this cluster") from None

    def endpoint(self, addr_or_index: str | int = 0) -> str:
        """``http(s)://ADDR:PORT`` of a node given by address or index."""
        addr = self.addresses[addr_or_index] if isinstance(addr_or_index, int) else addr_or_index
        return f"{'https' if self.tls else 'http'}://{addr}:{self.port}"

    def listed_addresses(self, dc: str | None = None) -> list[str]:
        with self._lock:
            return [n.address for n in self._nodes.values() if n.listed and (dc is None or n.dc == dc)]

    # -- control ---------------------------------------------------------
    def add_node(self, dc: str | None = None, rack: str | None = None) -> str:
        """Start a new node on the next address of the block; it is listed."""
        with self._lock:
            self._check_open()
            used = [int(a.rsplit(".", 1)[1]) for a in self._nodes]
            addr = self._block.address(max(used) + 1)
            sock = net.bind_listener(addr, self.port)
            node = SimulatedNode(addr, dc or DEFAULT_DC, rack or DEFAULT_RACK,
                                 localnodes_mode=self._default_mode[0],
                                 slow_delay=self._default_mode[1], **self._default_delay)
            self._nodes[addr] = node
            self._serve(node, sock)
            return addr

    def remove_node(self, addr: str) -> None:
        """Stop listing the node in /localnodes; it keeps serving requests."""
        self.unlist_node(addr)

    def unlist_node(self, addr: str) -> None:
        with self._lock:
            self.node(addr).listed = False

    def list_node(self, addr: str) -> None:
        with self._lock:
            self.node(addr).listed = True

    def stop_node(self, addr: str) -> None:
        """Kill the node: close its listening socket and reset all its
        connections.  New connections are refused; it stays listed."""
        with self._lock:
            node = self.node(addr)
            server, thread = node.server, node.thread
            node.server = node.thread = None
        if server is None:
            return
        server.abort()
        if thread is not None:
            thread.join(5)
        with self._lock:
            # Handler threads finish on their own (a request hook may still
            # hold one); close() joins them.
            self._retired.append(server)

    def start_node(self, addr: str) -> None:
        """Listen again on the node's address and the cluster's port."""
        with self._lock:
            self._check_open()
            node = self.node(addr)
            if node.server is not None:
                return
            # The old listener is closed; a rebind can only fail transiently.
            sock = net.wait_for(lambda: net.bind_listener(addr, self.port), timeout=5,
                                message=f"rebinding {addr}:{self.port}")
            self._serve(node, sock)

    def set_localnodes_mode(self, addr: str | None, mode: str, delay: float = 2.0) -> None:
        """Make /localnodes of one node (or of all nodes, and of nodes added
        later, if ``addr`` is None) answer in ``mode``:

        ``normal``; ``garbage`` (200, non-JSON body); ``error`` (HTTP 500);
        ``empty`` (``[]``); ``slow`` (waits ``delay`` seconds, then answers
        normally); ``bad_entries`` (valid IPs mixed with invalid strings,
        numbers, null...); ``not_array`` (a JSON object).
        """
        if mode not in LOCALNODES_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {LOCALNODES_MODES}")
        with self._lock:
            targets = list(self._nodes.values()) if addr is None else [self.node(addr)]
            if addr is None:
                self._default_mode = (mode, delay)
            for n in targets:
                n.localnodes_mode, n.slow_delay = mode, delay

    def set_localnodes_body(self, body: bytes | None) -> None:
        """Make every node answer /localnodes with exactly ``body`` (HTTP 200,
        JSON content type), e.g. a huge or hostile answer; ``None`` restores
        the modes above."""
        with self._lock:
            self._localnodes_body = body

    def drop_next_requests(self, addr: str, n: int, how: str = "reset") -> None:
        """Make the node read its next ``n`` DynamoDB requests (``POST``)
        whole and then end their connections without any answer: with a RST
        (``how="reset"``) or a FIN (``"close"``). The node stays up and
        listed, answers ``GET`` (probes, ``/localnodes``) as usual, and
        serves normally afterwards: a healthy node whose keep-alive
        connection ends just as a request goes out. Dropped requests are
        not recorded as served; :meth:`dropped_requests` counts them."""
        if how not in ("reset", "close"):
            raise ValueError(f"how must be 'reset' or 'close', not {how!r}")
        with self._lock:
            node = self.node(addr)
            node.drop_next, node.drop_how = n, how

    def set_answer_delay(self, addr: str | None, seconds: float = 0.0, *,
                         jitter: float | tuple[float, float] = 0.0,
                         spike_probability: float = 0.0, spike_delay: float = 0.0) -> None:
        """Make the node (every node, and nodes added later, if ``addr`` is
        None) answer every DynamoDB request (``POST``) ``seconds`` later than
        it would (0: not at all): a node that is compacting, hot or on a
        failing disk. Health checks and ``/localnodes`` are never delayed;
        nor are other connections while one waits.

        On top of ``seconds``, each answer draws a random extra delay:
        uniform in ``jitter`` (``(low, high)`` seconds, or ``high`` for
        ``(0, high)``), except that with probability ``spike_probability``
        it is ``spike_delay`` instead (a pause, a slow disk read). Draws
        come from the cluster's one generator, seeded by ``delay_seed``
        (:meth:`seed_answer_delays`), in the order requests arrive at the
        cluster: the same requests in the same order get the same delays,
        whichever node serves them. Each call replaces the node's whole
        delay profile; ``set_answer_delay(addr, 0)`` makes it prompt again.
        The delay of each answer is in its record (``delay``, ``spike``).
        """
        low, high = (0.0, float(jitter)) if isinstance(jitter, (int, float)) else map(float, jitter)
        if not (seconds >= 0 and 0 <= low <= high and spike_delay >= 0
                and 0 <= spike_probability <= 1):
            raise ValueError(f"bad delay profile: seconds={seconds}, jitter=({low}, {high}), "
                             f"spike_probability={spike_probability}, spike_delay={spike_delay}")
        profile = dict(answer_delay=float(seconds), answer_jitter=(low, high),
                       spike_probability=float(spike_probability), spike_delay=float(spike_delay))
        with self._lock:
            if addr is None:
                self._default_delay = profile
            for n in (list(self._nodes.values()) if addr is None else [self.node(addr)]):
                for k, v in profile.items():
                    setattr(n, k, v)

    def seed_answer_delays(self, seed: int | str | None) -> None:
        """Restart the generator of the random answer delays from ``seed``
        (None: from the system's randomness)."""
        with self._lock:
            self._delay_rng = random.Random(seed)

    def dropped_requests(self) -> dict[str, int]:
        """DynamoDB requests dropped unanswered, per node address."""
        with self._lock:
            return {a: self._dropped.get(a, 0) for a in self._nodes}

    def set_request_hook(self, hook: RequestHook | None) -> None:
        """Register (or clear) a hook called with each verified DynamoDB request."""
        with self._lock:
            self.request_hook = hook

    # -- counters --------------------------------------------------------
    def _init_counters(self) -> None:
        self._requests: collections.Counter[str] = collections.Counter()
        self._operations: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._sig_failures: collections.Counter[str] = collections.Counter()
        self._sig_failure_log: list[tuple[float, str, str]] = []
        self._localnodes_log: list[tuple[float, str, dict[str, str]]] = []
        self._records: collections.deque[DynamoRequest] = collections.deque(maxlen=MAX_RECORDS)
        self._last_headers: dict[str, list[tuple[str, str]]] = {}
        self._dropped: collections.Counter[str] = collections.Counter()

    def reset_counters(self) -> None:
        with self._lock:
            self._init_counters()

    def requests_per_node(self) -> dict[str, int]:
        """Verified DynamoDB requests per node address (every node present)."""
        with self._lock:
            return {a: self._requests.get(a, 0) for a in self._nodes}

    def total_requests(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    def operations_per_node(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {a: dict(self._operations.get(a, {})) for a in self._nodes}

    def signature_failures(self) -> dict[str, int]:
        """Requests rejected for their signature, per node address."""
        with self._lock:
            return {a: self._sig_failures.get(a, 0) for a in self._nodes}

    def signature_failure_reasons(self) -> list[tuple[float, str, str]]:
        """``(monotonic time, node address, reason)`` of each rejection."""
        with self._lock:
            return list(self._sig_failure_log)

    def localnodes_calls(self, since: float | None = None) -> list[tuple[float, str, dict[str, str]]]:
        """``(monotonic time, node address, query params)`` of each /localnodes
        call, optionally only those at or after ``since`` (``time.monotonic()``)."""
        with self._lock:
            return [c for c in self._localnodes_log if since is None or c[0] >= since]

    def dynamodb_requests(self, since: float | None = None) -> list[DynamoRequest]:
        """The most recent verified requests (up to MAX_RECORDS), oldest first."""
        with self._lock:
            return [r for r in self._records if since is None or r.timestamp >= since]

    def last_request_headers(self, addr: str) -> list[tuple[str, str]] | None:
        """Headers, as received, of the last verified request on a node."""
        with self._lock:
            headers = self._last_headers.get(addr)
            return list(headers) if headers is not None else None

    def errors(self) -> list[tuple[str, str]]:
        """Unexpected exceptions inside node handlers: (address, traceback).
        Should stay empty; a test can assert it."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, addr: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with self._lock:
            self._errors.append((addr, text))

    def _record_localnodes(self, addr: str, query: dict[str, str]) -> None:
        with self._lock:
            self._localnodes_log.append((time.monotonic(), addr, query))

    def _take_drop(self, addr: str) -> str | None:
        """How to drop this request of ``addr``, or None to serve it."""
        with self._lock:
            node = self._nodes[addr]
            if node.drop_next <= 0:
                return None
            node.drop_next -= 1
            self._dropped[addr] += 1
            return node.drop_how

    def _record_signature_failure(self, addr: str, reason: str) -> None:
        with self._lock:
            self._sig_failures[addr] += 1
            self._sig_failure_log.append((time.monotonic(), addr, reason))

    def _draw_delay(self, node: SimulatedNode) -> tuple[float, bool]:
        """The delay of a DynamoDB answer of ``node`` and whether it is a
        spike. Called under the lock, in the order requests arrive."""
        low, high = node.answer_jitter
        if node.spike_probability <= 0 and high <= 0:
            return node.answer_delay, False    # no draw: fixed delays use no randomness
        # Always two draws, so the sequence does not depend on the outcome.
        spike = self._delay_rng.random() < node.spike_probability
        extra = self._delay_rng.uniform(low, high)
        return node.answer_delay + (node.spike_delay if spike else extra), spike

    def _record_request(self, record: DynamoRequest) -> RequestHook | None:
        with self._lock:
            record.delay, record.spike = self._draw_delay(self._nodes[record.node])
            self._requests[record.node] += 1
            self._operations[record.node][record.operation] += 1
            self._last_headers[record.node] = record.headers
            self._records.append(record)
            return self.request_hook

    # -- internals -------------------------------------------------------
    def _secret_for(self, access_key: str) -> str | None:
        return self.secret_key if access_key == self.access_key else None

    def _members_for(self, asked: SimulatedNode, dc: str | None, rack: str | None) -> list[str]:
        with self._lock:
            dc = dc or asked.dc      # an empty ?dc= means "not given"
            return [n.address for n in self._nodes.values()
                    if n.listed and n.dc == dc and (not rack or n.rack == rack)]

    def _serve(self, node: SimulatedNode, sock: socket.socket) -> None:
        server = _NodeServer(sock, node, self)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True, name=f"node-{node.address}")
        node.server, node.thread = server, thread
        thread.start()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cluster is closed")

    def close(self) -> None:
        """Stop every node, join its threads and release the address block."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            addrs = list(self._nodes)
        for a in addrs:
            self.stop_node(a)
        deadline = time.monotonic() + 5
        for server in self._retired:
            server.join_handlers(max(0.0, deadline - time.monotonic()))
        block = getattr(self, "_block", None)
        if block is not None:
            block.release()

    def __enter__(self) -> "SimulatedCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
