"""Discovery through a real Envoy: the lease that makes one /localnodes call
per interval holds on Envoy's own shared data across its worker VMs, list
changes reach every worker, Envoy's callout failures arrive in the shapes
the filter names, and with every seed unreachable requests still go to
them (the filter refuses none while it knows a node).

What discovery decides (targets, backoff, the idle pace, bad and empty
answers, the cap, refused entries) is proven in the core with simulated
VMs and a clock (core/src/discovery.rs, localnodes.rs, poller/tests.rs).
"""

from __future__ import annotations

import http.client
import time

import pytest

from harness import net
from harness.proxy import wait_routed
from harness.traffic import listener_port, signed_headers


def test_one_localnodes_call_per_interval_with_four_workers(proxied):
    """Five VMs (four workers and the main thread) share one discovery
    record in Envoy's shared data and lease each round with its
    compare-and-set: without that, each VM polling on its own would make
    five calls an interval. (The lease's logic is core's:
    poller/tests.rs five_vms_poll_once_per_interval; that Envoy's shared
    data behaves as simulated there is what only this test shows.)"""
    p = proxied(concurrency=4, refresh_interval_ms=300)
    p.wait_discovered()
    start = time.monotonic()
    calls = net.wait_for(lambda: (c := p.cluster.localnodes_calls(since=start)) and len(c) >= 12 and c,
                         timeout=30, message="12 /localnodes calls")
    span = calls[-1][0] - calls[0][0]
    print(f"\n{len(calls)} /localnodes calls in {span:.2f} s at a {p.interval_s:.1f} s interval, 4 workers")
    # A round starts when due and makes the next one due an interval after
    # its own due time, or after now if it started that late
    # (discovery.rs try_start_round): so each call comes after the previous
    # one's next due time, and call k + m at least (m - 1) intervals after
    # call k, however late the ticks. 12 calls span more than 10 intervals
    # (3 s); five VMs polling on their own would make them in about one.
    assert span > (len(calls) - 2) * p.interval_s, [round(c[0] - start, 2) for c in calls]
    # The calls are spread over the known nodes, chosen at random.
    assert len({addr for _, addr, _ in calls}) >= 2, calls


def test_added_and_removed_nodes_reach_every_worker(proxied):
    """A node Alternator starts listing is routed by every worker once its
    probe passes, and one it stops listing is dropped by every worker; the
    log says what changed. (How a new list is applied is core's:
    poller/tests.rs a_changed_list_reaches_every_vm_and_new_nodes_wait_for_a_probe;
    the wording of these log lines is checked only here.)"""
    p = proxied(refresh_interval_ms=300, quarantine_probe_interval_ms=200, load_balancing="round_robin")
    p.wait_discovered()
    new = p.cluster.add_node()
    wait_routed(p, p.cluster.addresses)
    gone = p.cluster.addresses[0]
    p.cluster.remove_node(gone)  # no longer listed, still serving
    wait_routed(p, [a for a in p.cluster.addresses if a != gone])
    log = p.envoy.log_text()
    added = f"{new}:{p.cluster.port}"
    assert (f"node list changed, now 4 nodes; added [{added}], removed []; "
            f"quarantined until a probe succeeds: [{added}]") in log, log[-3000:]
    assert f"node {added} passed its probe; routing to it" in log, log[-3000:]
    assert f"node list changed, now 3 nodes; added [], removed [{gone}:{p.cluster.port}]" in log, log[-3000:]


def test_no_reachable_node_still_gets_the_requests(proxied):
    """Two seeds where nothing listens, nothing ever discovered: the filter
    never refuses a request while it knows a node. Each request goes to a
    seed (every seed Down: panic routing, counted in requests_routed_panic)
    and gets Envoy's own 503 for the refused connection, which SDKs retry;
    the filter's own 503 (details ``alternator_lb_no_node``) is only for a
    filter that knows no node at all, which a configured one never is."""
    block = net.reserve_loopback_block()
    try:
        port = net.free_port()
        seeds = [f"{block.address(1)}:{port}", f"{block.address(2)}:{port}"]
        p = proxied(n_nodes=0, seeds=seeds, port=port)
        # Each request shows a worker a seed that refuses connections.
        net.wait_for(lambda: _requests(p, 1) and p.envoy.stat("wasmcustom.alternator_lb.nodes_down") == 2,
                     timeout=10, message="both seeds Down")
        answers = _requests(p, 20)
        assert {status for status, _ in answers} == {503}, answers
        assert all(b"upstream connect error" in body for _, body in answers), answers[:2]
        net.wait_for(lambda: p.envoy.stat("wasmcustom.alternator_lb.requests_routed_panic") >= 20,
                     timeout=5, message="the requests routed in panic to be counted")
        assert p.envoy.stat("wasmcustom.alternator_lb.requests_rejected_no_node") == 0
        assert p.envoy.log_text().count("requests go to them anyway") == 1
    finally:
        block.release()


def _requests(p, n: int) -> list[tuple[int, bytes]]:
    """``n`` signed ListTables, each on a connection of its own: their
    statuses and bodies."""
    port = listener_port(p)
    answers = []
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            body = b"{}"
            conn.request("POST", "/", body=body, headers=signed_headers(p.endpoint, "ListTables", body))
            resp = conn.getresponse()
            answers.append((resp.status, resp.read()))
        finally:
            conn.close()
    return answers


@pytest.mark.parametrize("failure", ["refused", "timeout", "http_500"])
def test_discovery_failures_are_logged_as_what_happened(make_cluster, proxied, failure):
    """What Envoy hands the filter when a callout fails (its own 503 with the
    reset reason for a refused connection, its 504 at the callout's timeout,
    or the node's answer as sent) is what the core expects of it
    (poller/outcome.rs), so the log says what happened."""
    block = net.reserve_loopback_block()
    try:
        cluster = None
        if failure == "refused":
            port = net.free_port()
            seed = block.address(1)  # nothing listens there
            p = proxied(n_nodes=0, seeds=[seed], port=port, refresh_interval_ms=300, discovery_timeout_ms=250)
            why = 'connection failed or reset before an answer (Envoy: "remote connection failure")'
        else:
            cluster = make_cluster(n_nodes=1)
            seed, port = cluster.addresses[0], cluster.port
            cluster.set_localnodes_mode(None, "slow" if failure == "timeout" else "error", delay=1.0)
            p = proxied(cluster=cluster, refresh_interval_ms=300, discovery_timeout_ms=250)
            why = {
                "timeout": "timed out: no answer within discovery_timeout_ms (250 ms)",
                # The harness's error answer, quoted as sent.
                "http_500": r'answered HTTP 500: "{\"message\": \"simulated internal error\"}"',
            }[failure]
        expected = f"/localnodes from {seed}:{port} (the asked node's dc) failed: {why}; "

        def logged():
            return [line for line in p.envoy.log_text().splitlines() if expected in line]

        lines = net.wait_for(logged, timeout=5, message=f"a log line with {expected!r}")
        # One line, whole: the message was not split by what it quotes.
        assert lines[0].endswith("no node discovered yet (1 failures in a row; "
                                 "further failures are logged every 60 attempts)"), lines[0]
        net.wait_for(lambda: p.envoy.stat("wasmcustom.alternator_lb.discovery_failures") >= 1, timeout=5,
                     message="the failure to be counted")
        if cluster is not None:
            # The node answers again: the next round says so.
            cluster.set_localnodes_mode(None, "normal")
            net.wait_for(lambda: "discovery recovered after" in p.envoy.log_text(), timeout=10,
                         message="the recovery to be logged")
    finally:
        block.release()
