"""A DynamoDB workload through Envoy, and how its requests spread over the
Alternator nodes.

The DynamoDB part is plain boto3, as any application would use it: one
endpoint (Envoy), credentials from the standard AWS settings (the compose
file points AWS_SHARED_CREDENTIALS_FILE at the file the init service wrote),
nothing Alternator-specific. Only the report at the end reads Envoy's admin
interface, to show which node served what:

* /clusters: Envoy's per-host counters of the "alternator" cluster, one host
  per Alternator node the filter sent requests to (rq_total);
* /stats: the filter's own stats, wasmcustom.alternator_lb.* (nodes known,
  discovery rounds, requests routed).

Settings (environment): DYNAMODB_ENDPOINT (http://envoy:8080), ENVOY_ADMIN
(http://envoy:9901), TABLE (alternator_lb_demo), ITEMS (300), KEEP_TABLE
(unset: the table is deleted at the end).

Exit status: 0 when every item read back matches and every node the filter
knows served requests; 1 when an item is wrong; 2 when a known node got
no request.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

import boto3
from botocore.exceptions import ClientError

ENDPOINT = os.environ.get("DYNAMODB_ENDPOINT", "http://envoy:8080")
ADMIN = os.environ.get("ENVOY_ADMIN", "http://envoy:9901").rstrip("/")
TABLE = os.environ.get("TABLE", "alternator_lb_demo")
ITEMS = int(os.environ.get("ITEMS", "300"))
KEEP_TABLE = os.environ.get("KEEP_TABLE", "").lower() not in ("", "0", "false", "no")

# Right after the init service created the role and its grant, a node may not
# know them yet (auth data reaches every node within moments, and nodes cache
# permissions). Requests go round robin, so a few may meet such a node: they
# are retried for this long before the workload gives up.
AUTH_SETTLE_SECONDS = 60
AUTH_SETTLING = ("UnrecognizedClientException", "AccessDeniedException")


def admin_get(path: str) -> str:
    with urllib.request.urlopen(ADMIN + path, timeout=5) as answer:
        return answer.read().decode()


def requests_per_node(clusters_text: str) -> dict[str, int]:
    """rq_total per host of Envoy's "alternator" cluster, from the text form
    of /clusters (lines "alternator::10.0.0.1:8000::rq_total::42")."""
    counts: dict[str, int] = {}
    for line in clusters_text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "alternator" and parts[2] == "rq_total":
            counts[parts[1]] = int(parts[3])
    return counts


def filter_stats(stats_text: str) -> dict[str, int]:
    """The filter's stats from the text form of /stats
    ("wasmcustom.alternator_lb.nodes_known: 3"), without the prefix."""
    prefix = "wasmcustom.alternator_lb."
    stats: dict[str, int] = {}
    for line in stats_text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.startswith(prefix) and value.strip().lstrip("-").isdigit():
            stats[name[len(prefix):]] = int(value)
    return stats


def until_authorized(what: str, call):
    """Runs call(), retrying while the cluster is still settling the role."""
    deadline = time.monotonic() + AUTH_SETTLE_SECONDS
    while True:
        try:
            return call()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code not in AUTH_SETTLING or time.monotonic() > deadline:
                raise
            print(f"  {what}: {code}; the node that answered does not know the new role "
                  "or its grant yet, retrying")
            time.sleep(1)


def main() -> int:
    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        print("no AWS credentials found (AWS_SHARED_CREDENTIALS_FILE is "
              f"{os.environ.get('AWS_SHARED_CREDENTIALS_FILE')!r})", file=sys.stderr)
        return 1
    ddb = session.client("dynamodb", endpoint_url=ENDPOINT)
    print(f"DynamoDB endpoint {ENDPOINT} (Envoy), signing as {credentials.access_key!r}")

    before = requests_per_node(admin_get("/clusters"))
    started = time.monotonic()

    # Authentication first: ListTables needs no permission, only a key that
    # every node accepts. A few in a row reach every node.
    for _ in range(6):
        until_authorized("ListTables", ddb.list_tables)

    try:
        until_authorized("CreateTable", lambda: ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST"))
        print(f"created table {TABLE}")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
        print(f"table {TABLE} exists already (an earlier run kept it); using it")
    ddb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    print(f"writing {ITEMS} items, then reading each back")
    for i in range(ITEMS):
        until_authorized("PutItem", lambda: ddb.put_item(TableName=TABLE, Item={
            "pk": {"S": f"item-{i:06d}"}, "n": {"N": str(i)}, "note": {"S": "written through Envoy"}}))
    wrong = 0
    for i in range(ITEMS):
        got = until_authorized("GetItem", lambda: ddb.get_item(
            TableName=TABLE, Key={"pk": {"S": f"item-{i:06d}"}}, ConsistentRead=True))
        if got.get("Item", {}).get("n", {}).get("N") != str(i):
            wrong += 1
    if not KEEP_TABLE:
        until_authorized("DeleteTable", lambda: ddb.delete_table(TableName=TABLE))
        print(f"deleted table {TABLE} (set KEEP_TABLE=1 to keep it)")
    elapsed = time.monotonic() - started

    # The filter adds its request counters to Envoy's stats once per tick
    # (at most a second); Envoy's own per-host counters are immediate.
    time.sleep(1.5)
    after = requests_per_node(admin_get("/clusters"))
    stats = filter_stats(admin_get("/stats?filter=alternator_lb"))

    counts = {node: after[node] - before.get(node, 0) for node in sorted(after)}
    total = sum(counts.values())
    print(f"\n{ITEMS} items written and read back in {elapsed:.1f} s: "
          f"{'all correct' if wrong == 0 else f'{wrong} WRONG'}")
    print('requests per Alternator node during this run (Envoy admin /clusters, cluster "alternator", rq_total):')
    for node, n in counts.items():
        share = n / total if total else 0.0
        print(f"  {node:<22} {n:6d}  {share:6.1%}  {'#' * round(share * 40)}")
    print("the filter (Envoy admin /stats, wasmcustom.alternator_lb.*):")
    for name in ("nodes_known", "nodes_down", "nodes_quarantined", "discovery_successes",
                 "discovery_failures", "requests_routed", "requests_rejected_no_node"):
        print(f"  {name:<26} {stats.get(name, '?')}")

    if wrong:
        return 1
    known = stats.get("nodes_known", 0)
    served = sum(1 for n in counts.values() if n > 0)
    if served < known:
        print(f"only {served} of the {known} known nodes served requests", file=sys.stderr)
        return 2
    print(f"OK: requests spread over {served} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
