"""The quick-start demo: a simulated 3-node Alternator cluster, Envoy with
envoy/envoy.yaml exactly as shipped, and a small boto3 workload.

Run it with scripts/demo (which installs and builds what it needs). The
simulated nodes listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3, port 8000,
verify SigV4 signatures like Alternator with authorization enforced, and
store data in one shared DynamoDB-compatible server (moto). Envoy listens on
127.0.0.1:8080 with its admin interface on 127.0.0.1:9901, as the shipped
config says.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness.alternator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, SimulatedCluster  # noqa: E402
from harness.backend import MotoBackend  # noqa: E402
from harness.clients import dynamodb_client  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.net import wait_for  # noqa: E402

NODES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
NODE_PORT = 8000
ENDPOINT = "http://127.0.0.1:8080"
REQUESTS = 600


def main() -> int:
    with open(REPO / "envoy" / "envoy.yaml") as f:
        config = yaml.safe_load(f)
    print(f"starting moto (DynamoDB-compatible backend) and {len(NODES)} simulated Alternator nodes "
          f"on {', '.join(NODES)} port {NODE_PORT}")
    with MotoBackend() as backend, \
            SimulatedCluster(backend.url, addresses=NODES, port=NODE_PORT) as cluster:
        print("starting Envoy with envoy/envoy.yaml (listener 127.0.0.1:8080, admin 127.0.0.1:9901)")
        envoy = EnvoyProcess(config, config_file=REPO / "envoy" / "envoy.yaml", concurrency=2,
                             workdir=REPO / "target" / "demo", cwd=REPO)
        try:
            wait_for(lambda: "discovered 3 nodes" in envoy.log_text(), timeout=10,
                     message="the filter to discover the nodes")
            # The VM that polled logs the list; every other worker VM picks it
            # up on its next tick (a tenth of the refresh interval).
            time.sleep(0.3)
            for line in envoy.log_text().splitlines():
                if "wasm log" in line:
                    print("  envoy:", line.split("wasm log ", 1)[1])
            db = dynamodb_client(ENDPOINT, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)
            table = f"demo_{int(time.time())}"
            print(f"\nboto3 -> {ENDPOINT}: CreateTable {table}, then {REQUESTS} PutItem/GetItem")
            db.create_table(TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
            started = time.monotonic()
            before = Counter(cluster.requests_per_node())
            for i in range(REQUESTS // 2):
                db.put_item(TableName=table, Item={"id": {"S": f"item{i}"}, "n": {"N": str(i)}})
                got = db.get_item(TableName=table, Key={"id": {"S": f"item{i}"}})
                assert got["Item"]["n"]["N"] == str(i)
            counts = Counter(cluster.requests_per_node())
            counts.subtract(before)
            failures = sum(cluster.signature_failures().values())
            served = [r for r in cluster.dynamodb_requests(since=started) if r.operation in ("PutItem", "GetItem")]
            crossed = sum(1 for put, get in zip(served[::2], served[1::2]) if put.node != get.node)
            print(f"\nall {REQUESTS} requests succeeded; {crossed} of {REQUESTS // 2} items were read back "
                  "through another node than the one that wrote them")
            print("requests per node:")
            for addr in NODES:
                n = counts[addr]
                print(f"  {addr}:{NODE_PORT}  {n:5d}  {'#' * (n * 40 // REQUESTS)}")
            print(f"SigV4 signatures rejected by the nodes: {failures}")
            return 0 if failures == 0 and sum(counts.values()) == REQUESTS else 1
        finally:
            envoy.stop()


if __name__ == "__main__":
    sys.exit(main())
