"""Node health through a real Envoy: a node killed under SDK load (Envoy's
connection failures and resets, as Envoy reports them, take it out) costs
the application nothing and comes back after a probe; every stat the filter
defines reaches Envoy's /stats and /stats/prometheus and moves.

Health's states, transitions, probe schedule and backoff are proven in the
core with simulated VMs and a clock (core/src/health.rs, poller/tests.rs).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from harness import net
from harness.proxy import Load, create_table, host_stats

FAST = dict(refresh_interval_ms=500, down_probe_interval_ms=1000, quarantine_probe_interval_ms=300,
            load_balancing="round_robin")
S = "wasmcustom.alternator_lb."


def raw_request(endpoint: str):
    req = urllib.request.Request(endpoint + "/", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/x-amz-json-1.0",
                                          "X-Amz-Target": "DynamoDB_20120810.ListTables"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def test_node_killed_under_load_costs_the_application_nothing(proxied, dynamodb, table_name):
    concurrency = 2
    p = proxied(concurrency=concurrency, **FAST)
    p.wait_discovered()
    create_table(dynamodb(p.endpoint), table_name)
    victim = p.cluster.addresses[1]
    victim_host = f"{victim}:{p.cluster.port}"
    attempts = lambda: host_stats(p.envoy).get(victim_host, {})  # noqa: E731
    threads = 8
    with Load(lambda: dynamodb(p.endpoint), table_name, threads=threads) as load:
        started = time.monotonic()
        net.wait_for(lambda: attempts().get("rq_success", 0) >= 20, timeout=20,
                     message="the victim to serve its share of the load")
        rate = load.ok / (time.monotonic() - started)
        before_5xx = p.envoy.stat("http.dynamodb.downstream_rq_5xx")
        before = attempts()
        p.cluster.stop_node(victim)
        ok_at_stop = load.ok
        net.wait_for(lambda: f"node {victim_host} marked Down" in p.envoy.log_text(), timeout=10,
                     message="the stopped node to be marked Down")
        # Every worker takes that up on its next tick (if its own requests
        # did not already show it the node is gone): wait until 100 SDK
        # calls went by without an attempt on the node ...
        quiet = {"since": (attempts(), load.ok)}

        def quiet_for_100_calls():
            now = attempts()
            if now != quiet["since"][0]:
                quiet["since"] = (now, load.ok)
                return False
            return load.ok - quiet["since"][1] >= 100

        net.wait_for(quiet_for_100_calls, timeout=20, message="100 SDK calls without an attempt on the node")
        attempts_out = quiet["since"][0]
        # ... and from then on, for 2 s of steady load, nothing more reaches
        # it (a duration is the subject here, so this sleep stays).
        time.sleep(2.0)
        attempts_later = attempts()
        proxy_503s = p.envoy.stat("http.dynamodb.downstream_rq_5xx") - before_5xx
        ok_during_outage = load.ok - ok_at_stop

        # Restart: back in rotation once its probe passes.
        p.cluster.start_node(victim)
        restarted = time.monotonic()
        net.wait_for(lambda: any(r.node == victim for r in p.cluster.dynamodb_requests(since=restarted)),
                     timeout=10, message="the restarted node to get traffic again")
        back_after = time.monotonic() - restarted
    delta = {k: attempts_later.get(k, 0) - before.get(k, 0) for k in attempts_later}
    # After the stop, requests a worker picked for the node before it took
    # the node out (at its own first refused connect, or on its next tick)
    # find it refusing connections: at most one per client thread, each
    # having one request in flight; nothing more. (Connections opened while
    # the node was being stopped may have been accepted, then reset.)
    refused = delta["cx_connect_fail"]
    # In flight at the stop: outstanding at the sample just before it, plus
    # those started since on existing connections that never succeeded (a
    # pooled connection Envoy had not yet seen reset: a reset alone no longer
    # marks a node Down). A request whose connect failed never reaches a
    # connection, so Envoy counts it in rq_error, not rq_total.
    in_flight = before.get("rq_active", 0) + delta["rq_total"] - delta["rq_success"]
    print(f"\nload {rate:.0f} req/s; {in_flight} in flight to the victim at the stop; {proxy_503s} proxy 503s; "
          f"{refused} refused connects to it; victim requests once quiet: "
          f"{attempts_out.get('rq_total')}, 2 s later: {attempts_later.get('rq_total')}; "
          f"back after {back_after:.2f}s; {load.ok} SDK calls, {len(load.errors)} errors")
    # The load is what this machine's Python SDK client manages (tens to
    # hundreds of requests/s); the test needs only that the victim was
    # serving its share when it stopped and that calls went on while it was
    # down, not a particular speed.
    assert ok_during_outage > 0, "no SDK call completed while the node was down"
    assert load.errors == [], load.errors[:5]
    assert attempts_later["rq_total"] == attempts_out["rq_total"], \
        f"the stopped node still got requests after 100 calls without: {attempts_out} -> {attempts_later}"
    assert refused <= threads, f"{refused} connects to the stopped node refused: {delta}"
    # Every 503 was a request reset at the stop or a refused connect.
    assert proxy_503s <= in_flight + refused, f"{proxy_503s} 503s, {in_flight} in flight at the stop: {delta}"
    log = p.envoy.log_text()
    assert log.count(f"node {victim_host} marked Down") == 1, "one log line per transition"
    assert f"node {victim_host} is back" in log


def test_every_metric_moves(proxied, dynamodb, table_name):
    p = proxied(**FAST)
    p.wait_discovered()
    db = dynamodb(p.endpoint)
    create_table(db, table_name)
    for i in range(30):
        db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": str(i)}})
    p.cluster.set_localnodes_mode(None, "garbage")
    net.wait_for(lambda: p.envoy.stat(S + "discovery_failures") >= 1, timeout=10,
                 message="a garbage answer to count as a failure")
    p.cluster.set_localnodes_mode(None, "normal")
    # Failures back off (1, 1, 2, 4 intervals ...); success comes back.
    net.wait_for(lambda: p.envoy.stat(S + "discovery_successes") >= 2, timeout=10,
                 message="discovery to succeed again")
    victim = p.cluster.addresses[0]
    p.cluster.stop_node(victim)
    for i in range(6):
        db.get_item(TableName=table_name, Key={"pk": {"S": "k"}, "sk": {"S": str(i)}})

    def stats():
        got = p.envoy.stats(filter="alternator_lb")
        return {name[len(S):]: v for name, v in got.items() if name.startswith(S)}

    # Gauges and counters are written on each VM's tick.
    s = net.wait_for(lambda: (s := stats())["nodes_down"] == 1 and s["requests_routed"] >= 37 and s,
                     timeout=5, message="the stop to show in the stats")
    print(s)
    assert s["nodes_known"] == 3
    assert s["nodes_quarantined"] == 0
    assert s["discovery_successes"] >= 2
    assert s["discovery_failures"] >= 1
    assert s["nodes_marked_down"] == 1
    assert s["node_list_age_ms"] > 0
    # All nodes down: requests still go to them (Envoy answers 503), routed
    # in panic rather than refused by the filter.
    for addr in p.cluster.addresses:
        p.cluster.stop_node(addr)
    net.wait_for(lambda: raw_request(p.endpoint)[0] == 503 and
                 p.envoy.stat(S + "requests_routed_panic") > 0, timeout=5)
    assert p.envoy.stat(S + "requests_rejected_no_node") == 0
    net.wait_for(lambda: p.envoy.stat(S + "nodes_down") == 3 and p.envoy.stat(S + "probe_failures") >= 1,
                 timeout=10, message="every node Down, and a failed probe")
    # Prometheus names start with alternator_lb.
    status, prom = p.envoy.admin_get("/stats/prometheus")
    names = {line.split("{")[0].split(" ")[0] for line in prom.splitlines()
             if "alternator_lb" in line and not line.startswith("#")}
    assert "alternator_lb_requests_routed" in names, sorted(names)
