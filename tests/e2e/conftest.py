"""pytest fixtures for the end-to-end tests.

* ``backend`` (session): one moto server per test process (each xdist worker
  gets its own), shared by every cluster of that process.  Tests use unique
  table names, so they do not see each other's data.
* ``make_cluster(...)`` / ``make_envoy(...)`` (function): factories that
  remember everything they started and stop it at teardown, also when the
  test failed, so that no node thread or Envoy process outlives its test.
* ``proxied(...)`` (function): a factory for a simulated cluster behind a
  real Envoy loading the filter (:func:`harness.proxy.start_proxied`), both
  made with the two factories above, so stopped at teardown by them.
* ``dynamodb`` (function): a factory for boto3 clients with the cluster's
  credentials.
* On a failed test, the tail of every Envoy log started by that test is
  attached to the failure report ("Envoy log tail" sections).
* SIGTERM (a CI timeout, ``timeout``, ``kill``) interrupts pytest like
  Ctrl-C, so the fixtures still stop every Envoy and moto server they
  started; each runs in its own process group and would otherwise outlive
  the test run.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest

from harness.alternator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, SimulatedCluster
from harness.backend import MotoBackend
from harness.clients import dynamodb_client
from harness.envoy import EnvoyProcess
from harness.proxy import Proxied, start_proxied

_envoys_key = pytest.StashKey[list]()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def backend(tmp_path_factory):
    """The shared DynamoDB-compatible backend (moto) of this test process."""
    be = MotoBackend(log_dir=tmp_path_factory.mktemp("moto"))
    be.start()
    try:
        yield be
    finally:
        be.stop()


@pytest.fixture
def make_cluster(backend):
    """Factory: ``make_cluster(n_nodes=None, topology=None, **kw)`` returns a
    started :class:`SimulatedCluster` on the session backend; all are
    closed at teardown."""
    clusters: list[SimulatedCluster] = []

    def factory(n_nodes: int | None = None, topology=None, **kw: Any) -> SimulatedCluster:
        c = SimulatedCluster(backend.url, n_nodes=n_nodes, topology=topology, **kw)
        clusters.append(c)
        return c

    yield factory
    errors = []
    for c in reversed(clusters):
        try:
            c.close()
        except Exception as e:  # noqa: BLE001 - close the others anyway
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def make_envoy(request, tmp_path):
    """Factory: ``make_envoy(config, concurrency=2, log_level="info", **kw)``
    returns a ready :class:`EnvoyProcess` working in a fresh directory under
    ``tmp_path``; all are stopped (by PID) at teardown."""
    envoys: list[EnvoyProcess] = []
    request.node.stash[_envoys_key] = envoys

    def factory(config: dict, concurrency: int = 2, log_level: str = "info",
                **kw: Any) -> EnvoyProcess:
        workdir = tmp_path / f"envoy-{len(envoys)}"
        e = EnvoyProcess(config, concurrency=concurrency, log_level=log_level,
                         workdir=workdir, start=False, **kw)
        envoys.append(e)     # tracked before start, so a half-started one is stopped too
        e.start()
        return e

    yield factory
    for e in envoys:
        e.stop()


@pytest.fixture
def proxied(make_cluster, make_envoy):
    """Factory: ``proxied(n_nodes=3, concurrency=2, seeds=None, cluster=None,
    shipped=envoy/envoy.yaml, edit_config=None, envoy_args=(), **filter_keys)``
    returns a :class:`~harness.proxy.Proxied`: a cluster and a ready Envoy
    in front of it (see :func:`~harness.proxy.start_proxied`), both stopped
    at teardown by ``make_cluster`` and ``make_envoy``."""

    def factory(**kw: Any) -> Proxied:
        return start_proxied(make_cluster, make_envoy, **kw)

    return factory


@pytest.fixture
def dynamodb():
    """Factory: ``dynamodb(endpoint_url, access_key=..., secret_key=..., **config)``
    returns a boto3 DynamoDB client (SDK defaults unless config is given)."""

    def factory(endpoint_url: str, access_key: str = DEFAULT_ACCESS_KEY,
                secret_key: str = DEFAULT_SECRET_KEY, **config: Any):
        return dynamodb_client(endpoint_url, access_key, secret_key, **config)

    return factory


@pytest.fixture
def table_name() -> str:
    """A table name unique to this test."""
    return "t_" + uuid.uuid4().hex[:12]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of each Envoy log to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for i, e in enumerate(item.stash.get(_envoys_key, [])):
            report.sections.append((f"Envoy log tail [{i}] ({e.log_path})", e.log_tail(80)))
