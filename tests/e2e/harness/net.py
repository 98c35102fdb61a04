"""Loopback address and port allocation for end-to-end tests.

Why this module exists
----------------------
The e2e tests start many servers (simulated Alternator nodes, a DynamoDB
backend, Envoy listeners and admin ports) and run in several processes at
once under pytest-xdist.  Two things must never happen:

* two tests binding the same ``address:port`` (one of them would fail, or
  worse, talk to the other test's server), and
* two simulated clusters sharing node addresses: the filter under test learns
  bare IP addresses from ``/localnodes`` and combines them with the cluster's
  single port, so clusters must be told apart by address, as real clusters
  on different machines would be.

Linux routes the whole ``127.0.0.0/8`` to the loopback interface, so any
``127.A.B.C`` can be bound without configuration.  A simulated cluster gets a
``/24`` block ``127.A.B.0/24`` picked at random and *reserved* with an
exclusive ``flock`` on a small file in the system temporary directory.  The
lock is held for the lifetime of the block and is released by the kernel
when the process dies, so a crashed test never leaks a reservation.  All
nodes of a cluster listen on one common port, like a real Alternator cluster
where ``alternator_port`` is the same on every node.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

T = TypeVar("T")

#: Directory holding one lock file per reserved ``127.A.B.0/24`` block.
LOCK_DIR = os.path.join(tempfile.gettempdir(), "alternator-e2e-loopback-blocks")

#: Highest host number usable inside a block (``127.A.B.1`` .. ``127.A.B.254``).
MAX_HOSTS_PER_BLOCK = 254

_rng = random.SystemRandom()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    The kernel picks the port (bind to port 0), which on Linux is a random
    choice within the ephemeral range, so parallel test processes asking at
    the same moment get different ports.  The socket is closed before
    returning, so there is an unavoidable window in which someone else could
    take the port; for servers we start ourselves prefer binding the socket
    and handing it over (see :func:`bind_common_port`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_block(n: int) -> list[str]:
    """Return ``n`` distinct addresses ``127.A.B.1`` .. ``127.A.B.n``.

    ``A`` is drawn from 2..254 (avoiding ``127.0`` and ``127.1``, which other
    software on the machine commonly uses, and ``127.255``) and ``B`` from
    0..255.  This only *picks* addresses; use :func:`reserve_loopback_block`
    or :func:`bind_common_port` for a block that no other test can pick
    while we hold it.
    """
    _check_count(n)
    a = _rng.randint(2, 254)
    b = _rng.randint(0, 255)
    return [f"127.{a}.{b}.{i}" for i in range(1, n + 1)]


def _check_count(n: int) -> None:
    if not 1 <= n <= MAX_HOSTS_PER_BLOCK:
        raise ValueError(f"need 1..{MAX_HOSTS_PER_BLOCK} addresses, got {n}")


@dataclass
class LoopbackBlock:
    """A reserved ``127.A.B.0/24`` block.

    While this object is open no other process using this module will pick
    the same block.  ``address(i)`` gives host number ``i`` (1-based).
    """

    prefix: str  # "127.A.B"
    _lock_fd: int | None = field(default=None, repr=False)
    _lock_path: str | None = field(default=None, repr=False)

    def address(self, i: int) -> str:
        if not 1 <= i <= MAX_HOSTS_PER_BLOCK:
            raise ValueError(f"host number must be 1..{MAX_HOSTS_PER_BLOCK}, got {i}")
        return f"{self.prefix}.{i}"

    def addresses(self, n: int) -> list[str]:
        _check_count(n)
        return [self.address(i) for i in range(1, n + 1)]

    def release(self) -> None:
        """Give the block back.  Idempotent."""
        fd, path = self._lock_fd, self._lock_path
        self._lock_fd = self._lock_path = None
        if fd is None:
            return
        try:
            # Unlink while still holding the lock; a process that opened the
            # old file meanwhile notices the inode changed and retries.
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "LoopbackBlock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(path: str) -> int | None:
    """Take an exclusive, non-blocking flock on ``path``; None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    # The file may have been unlinked by its previous owner between our open
    # and our lock: then we hold a lock nobody else can see.  Check that the
    # path still names the inode we locked.
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def reserve_loopback_block(attempts: int = 100) -> LoopbackBlock:
    """Pick a random ``127.A.B.0/24`` block and reserve it across processes."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    for _ in range(attempts):
        prefix = loopback_block(1)[0].rsplit(".", 1)[0]
        path = os.path.join(LOCK_DIR, prefix + ".lock")
        fd = _try_lock(path)
        if fd is not None:
            return LoopbackBlock(prefix, fd, path)
    raise RuntimeError(f"could not reserve a loopback block in {attempts} attempts")


def bind_listener(address: str, port: int, backlog: int = 128) -> socket.socket:
    """Bind and listen on ``address:port``, with SO_REUSEADDR.

    SO_REUSEADDR lets a stopped node listen again on its port at once even
    if connections it aborted linger in TIME_WAIT; it does not let two live
    listeners share an address and port on Linux.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(backlog)
    except BaseException:
        s.close()
        raise
    return s


@dataclass
class BoundBlock:
    """``n`` listening sockets on distinct addresses sharing one port."""

    block: LoopbackBlock
    port: int
    addresses: list[str]
    sockets: list[socket.socket]

    def close(self) -> None:
        """Close the sockets (if not handed over) and release the block."""
        for s in self.sockets:
            s.close()
        self.block.release()


def bind_common_port(n: int, attempts: int = 50, backlog: int = 128) -> BoundBlock:
    """Listen on ``127.A.B.1`` .. ``127.A.B.n``, all on one common port.

    The port is chosen by the kernel for the first address; the other
    addresses then bind the same port.  If any bind fails (the port is
    somehow taken on one of the addresses), everything is closed and another
    port and block are tried.  The returned sockets are already listening,
    so there is no window in which another process could take them.
    """
    _check_count(n)
    last_error: Exception | None = None
    for _ in range(attempts):
        block = reserve_loopback_block()
        addresses = block.addresses(n)
        sockets: list[socket.socket] = []
        try:
            first = bind_listener(addresses[0], 0, backlog)
            sockets.append(first)
            port = first.getsockname()[1]
            for addr in addresses[1:]:
                sockets.append(bind_listener(addr, port, backlog))
            return BoundBlock(block, port, addresses, sockets)
        except OSError as e:
            last_error = e
            for s in sockets:
                s.close()
            block.release()
    raise RuntimeError(f"could not bind {n} loopback addresses on one port: {last_error}")


def bind_fixed(addresses: list[str], port: int, backlog: int = 128) -> BoundBlock:
    """Listen on the given loopback ``addresses`` (one /24, e.g. ``127.0.0.x``),
    all on ``port``; a clear error if one is taken. Not reserved against
    other tests: for the demo, which uses the well-known addresses."""
    prefixes = {a.rsplit(".", 1)[0] for a in addresses}
    if len(prefixes) != 1:
        raise ValueError(f"addresses must share one /24: {addresses}")
    sockets: list[socket.socket] = []
    try:
        for addr in addresses:
            try:
                sockets.append(bind_listener(addr, port, backlog))
            except OSError as e:
                raise RuntimeError(f"cannot listen on {addr}:{port}: {e.strerror}; is something else using it?") from e
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return BoundBlock(LoopbackBlock(prefixes.pop()), port, list(addresses), sockets)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return it.

    Used instead of fixed sleeps: the test proceeds as soon as the condition
    holds, and fails with a clear message when it never does.  Exceptions
    raised by the predicate count as "not yet" (a server still starting
    refuses connections); the last one is chained to the TimeoutError.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: T | None = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
            last_exc = None
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            detail = f"; last error: {last_exc!r}" if last_exc else f"; last value: {last_value!r}"
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}") from last_exc
        time.sleep(interval)

