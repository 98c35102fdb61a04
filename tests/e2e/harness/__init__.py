"""End-to-end test harness for the Alternator load-balancing Envoy filter.

Modules:

* :mod:`.net` - loopback address blocks, common-port binding, free ports, wait_for.
* :mod:`.backend` - a real DynamoDB-compatible server (moto) as a subprocess.
* :mod:`.sigv4` - AWS SigV4 verification, as Alternator does it.
* :mod:`.alternator` - a simulated, controllable Alternator cluster (in-process).
* :mod:`.envoy` - running a real Envoy from a config dict.
* :mod:`.clients` - boto3 clients with explicit credentials, and a Host of the test's choosing.
* :mod:`.affinity_ref` - key route affinity's node choice, written from the spec (the oracle).
* :mod:`.filter_config` - the module as built and Envoy configs derived from the shipped ones.
* :mod:`.proxy` - a cluster behind Envoy with the filter (the ``proxied`` fixture), waiting
  until every worker routes over given nodes, one table schema, steady SDK load.
* :mod:`.traffic` - clients placed on known Envoy workers, which node served what,
  round robin's exact spread per worker, hand-built signed requests.
* :mod:`.recording_server` - a plain HTTP service (not Alternator) that records what it
  received, for a listener the filter shares with other hosts.
"""
