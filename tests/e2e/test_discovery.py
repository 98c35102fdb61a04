"""Discovery through a real Envoy: one /localnodes call per process per
interval, list changes followed, Envoy's callout failures named, and a
clean 503 when no node is reachable. (Bad answers and entries, and the
dc/rack questions, are proven in the core: localnodes.rs, discovery.rs,
poller/tests.rs.)"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from harness import net
from harness.proxy import Load, counts_since, create_table, sleep_intervals, start_proxied, wait_discovered


def test_one_localnodes_call_per_interval_with_four_workers(make_cluster, make_envoy):
    p = start_proxied(make_cluster, make_envoy, concurrency=4, refresh_interval_ms=500)
    wait_discovered(p, 3)
    time.sleep(1.0)  # past start-up
    start = time.monotonic()
    sleep_intervals(p, 10)
    calls = [c for c in p.cluster.localnodes_calls(since=start) if c[0] < start + 10 * p.interval_s]
    print(f"{len(calls)} /localnodes calls in 10 intervals with 4 workers")
    # One lease for the whole process: never more than a call per interval
    # (five VMs polling on their own would make about 50). The lower bound
    # only says that discovery goes on: a loaded machine runs the ticks late,
    # and each late round starts the next interval late.
    assert 5 <= len(calls) <= 12, f"{len(calls)} /localnodes calls in 10 intervals: {calls}"
    # The calls are spread over the known nodes, chosen at random.
    assert len({addr for _, addr, _ in calls}) >= 2, calls


def test_added_node_gets_traffic_and_removed_node_loses_it(make_cluster, make_envoy, dynamodb, table_name):
    p = start_proxied(make_cluster, make_envoy, refresh_interval_ms=500)
    wait_discovered(p, 3)
    create_table(dynamodb(p.endpoint), table_name)
    with Load(lambda: dynamodb(p.endpoint), table_name) as load:
        new = p.cluster.add_node()
        added_at = time.monotonic()
        net.wait_for(lambda: p.cluster.requests_per_node().get(new, 0) > 0, timeout=10,
                     message="the added node to get traffic")
        took = time.monotonic() - added_at
        print(f"the added node got traffic after {took:.2f} s")
        # The next round lists it and the next tick routes to it: within an
        # interval and a tick, plus slack for a loaded machine.
        assert took <= 2 * p.interval_s + 1.0, f"new node got traffic after {took:.2f}s"

        gone = p.cluster.addresses[0]
        p.cluster.remove_node(gone)  # no longer listed, still serving
        sleep_intervals(p, 2)
        before = p.cluster.requests_per_node()
        sleep_intervals(p, 2)
        after = counts_since(p.cluster, before)
        assert after.get(gone, 0) == 0, f"removed node still got {after[gone]} requests"
        assert all(after[a] > 0 for a in p.cluster.addresses if a != gone), after
    assert load.errors == []
    log = p.envoy.log_text()
    assert "node list changed, now 4 nodes; added" in log
    assert "node list changed, now 3 nodes; added [], removed" in log


def test_no_reachable_node_gives_an_immediate_dynamodb_style_503(make_envoy, make_cluster):
    # Two seeds where nothing listens, nothing ever discovered.
    block = net.reserve_loopback_block()
    try:
        port = net.free_port()
        seeds = [f"{block.address(1)}:{port}", f"{block.address(2)}:{port}"]
        p = start_proxied(make_cluster, make_envoy, cluster=object(), seeds=seeds, port=port)
        ready = time.monotonic()

        def answer():
            req = urllib.request.Request(p.endpoint + "/", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/x-amz-json-1.0",
                                                  "X-Amz-Target": "DynamoDB_20120810.ListTables"})
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, dict(r.headers), r.read(), time.monotonic() - t0
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read(), time.monotonic() - t0

        # The filter answers these itself: a request must never wait for the
        # client's 5 s timeout. The bounds leave a loaded machine its slack.
        def json_503():
            status, headers, body, took = answer()
            assert took < 3.0, f"a request took {took:.2f}s: the proxy must not hang"
            return status == 503 and headers.get("content-type") == "application/x-amz-json-1.0" and (status, body)

        status, body = net.wait_for(json_503, timeout=5, interval=0.05)
        first_503 = time.monotonic() - ready
        print(f"the first 503 came {first_503:.2f} s after Envoy was ready")
        assert first_503 <= 3.0, "503 JSON error should come once discovery has failed on every seed"
        doc = json.loads(body)
        assert doc["__type"].endswith("#ServiceUnavailableException")
        assert "no Alternator node" in doc["message"]
        # Every worker picks the empty list up on its next tick (100 ms here);
        # from then on it stays that way, request after request.
        time.sleep(0.3)
        for _ in range(20):
            status, headers, body, took = answer()
            assert (status, headers.get("content-type")) == (503, "application/x-amz-json-1.0"), body
            assert took < 3.0, f"a request took {took:.2f}s: the proxy must not hang"
    finally:
        block.release()


@pytest.mark.parametrize("failure", ["refused", "timeout", "http_500"])
def test_discovery_failures_are_logged_as_what_happened(make_cluster, make_envoy, failure):
    # The only seed fails the way the parameter says, from the first call,
    # so the first failure of the streak is logged.
    block = net.reserve_loopback_block()
    try:
        if failure == "refused":
            port = net.free_port()
            seed = block.address(1)  # nothing listens there
            p = start_proxied(make_cluster, make_envoy, cluster=object(), seeds=[seed], port=port,
                              refresh_interval_ms=300, discovery_timeout_ms=250)
            why = 'connection failed or reset before an answer (Envoy: "remote connection failure'
        else:
            cluster = make_cluster(n_nodes=1)
            seed, port = cluster.addresses[0], cluster.port
            cluster.set_localnodes_mode(None, "slow" if failure == "timeout" else "error", delay=1.0)
            p = start_proxied(make_cluster, make_envoy, cluster=cluster, refresh_interval_ms=300,
                              discovery_timeout_ms=250)
            why = {
                "timeout": "timed out: no answer within discovery_timeout_ms (250 ms); ",
                # The harness's error answer, quoted as sent.
                "http_500": r'answered HTTP 500: "{\"message\": \"simulated internal error\"}"; ',
            }[failure]
        expected = f"/localnodes from {seed}:{port} (the asked node's dc) failed: {why}"

        def logged():
            return [line for line in p.envoy.log_text().splitlines() if expected in line]

        lines = net.wait_for(logged, timeout=5, message=f"a log line with {expected!r}")
        # One line, whole: the message was not split by what it quotes.
        assert lines[0].endswith("no node discovered yet (1 failures in a row; "
                                 "further failures are logged every 60 attempts)"), lines[0]
        assert p.envoy.stat("wasmcustom.alternator_lb.discovery_failures") >= 1
    finally:
        block.release()
