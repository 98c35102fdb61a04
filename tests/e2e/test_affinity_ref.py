"""The harness's reference implementation of key route affinity
(harness/affinity_ref.py) against the published cross-language vectors, so
that the end-to-end affinity tests judge the filter by a trusted oracle.
No Envoy, no cluster: this runs in well under a second.

Vectors: scylladb/alternator-client-python feature-specs/vectors
(affinity-hash.tsv, query-plan.tsv, endpoint-order.tsv), the Go, Java and
Rust clients' cross-language tests (type collisions, raw MurmurHash3), and
key -> node vectors derived from them (no published vector maps a key to a
node).
"""

from __future__ import annotations

import base64

import pytest

from harness import affinity_ref as ref

DNS10 = [f"http://node{i}.example.com:8043" for i in range(1, 11)]
THREE = ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]
# 10.0.0.10 sorts before 10.0.0.1:8000 as a string (':' > '0'), after it without a port.
PITFALL = ["http://10.0.0.2:8000", "http://10.0.0.10:8000", "http://10.0.0.1:8000", "http://10.0.0.9:8000"]
PITFALL_PORT_80 = ["http://10.0.0.2:80", "http://10.0.0.10:80", "http://10.0.0.1:80", "http://10.0.0.9:80"]


def dns(numbers: list[int]) -> list[str]:
    return [f"http://node{i}.example.com:8043" for i in numbers]


# (key, hash input hex: type prefix || payload, expected signed h1)
HASH_VECTORS = [
    ({"S": "hello"}, '0168656c6c6f', 8815023923555918238),
    ({"S": ""}, '01', 8849112093580131862),
    ({"S": "user_123"}, '01757365725f313233', -4025731529809423594),
    ({"S": "こんにちは"}, '01e38193e38293e381abe381a1e381af', -8746014667889746860),
    ({"N": "42"}, '023432', -5061732451827723051),
    ({"N": "-12345"}, '022d3132333435', 2496798676881075539),
    ({"N": "3.14159"}, '02332e3134313539', 2139945193071104172),
    ({"N": "1.23E10"}, '02312e3233453130', -8571981415737439826),
    ({"B": "AQID"}, '03010203', 5026299041734804437),
    ({"B": ""}, '03', 8244620721157455449),
    ({"B": "/wCA"}, '03ff0080', 14533934253577680),
    ({"S": "12345"}, '013132333435', -6122888897254035317),
    ({"N": "12345"}, '023132333435', -3190731486301745196),
    ({"B": "MTIzNDU="}, '033132333435', -3752463870508600385),
]

RAW_MURMUR_VECTORS = [
    ('', 0),
    ('01', 8849112093580131862),
    ('68656c6c6f', -3758069500696749310),
    ('0168656c6c6f', 8815023923555918238),
]

# (seed, the plan over DNS10's canonical ring, as node numbers)
SEEDED_PLAN_VECTORS = [
    (42, [5, 8, 4, 10, 6, 1, 9, 2, 7, 3]),
    (123, [5, 1, 3, 2, 9, 4, 7, 10, 6, 8]),
    (999, [4, 9, 3, 1, 10, 2, 5, 8, 7, 6]),
    (0, [4, 1, 10, 9, 5, 7, 3, 2, 8, 6]),
    (-1, [10, 4, 1, 2, 5, 9, 3, 6, 8, 7]),
    (12345, [3, 4, 1, 6, 5, 7, 2, 8, 10, 9]),
    (9223372036854775807, [10, 6, 7, 1, 9, 3, 5, 2, 8, 4]),
]

# (nodes, key, its hash, its plan)
AFFINITY_NODE_VECTORS = [
    (THREE, {"S": "hello"}, 8815023923555918238,
     ['http://10.0.0.1:8000', 'http://10.0.0.2:8000', 'http://10.0.0.3:8000']),
    (THREE, {"S": ""}, 8849112093580131862,
     ['http://10.0.0.1:8000', 'http://10.0.0.2:8000', 'http://10.0.0.3:8000']),
    (THREE, {"S": "user_123"}, -4025731529809423594,
     ['http://10.0.0.2:8000', 'http://10.0.0.3:8000', 'http://10.0.0.1:8000']),
    (THREE, {"B": "/wCA"}, 14533934253577680,
     ['http://10.0.0.3:8000', 'http://10.0.0.2:8000', 'http://10.0.0.1:8000']),
    (DNS10, {"S": "hello"}, 8815023923555918238,
     dns([8, 7, 4, 2, 6, 1, 3, 5, 10, 9])),
    (DNS10, {"S": ""}, 8849112093580131862,
     dns([9, 3, 7, 5, 1, 6, 10, 8, 2, 4])),
    (DNS10, {"S": "user_123"}, -4025731529809423594,
     dns([2, 3, 10, 8, 1, 9, 6, 7, 4, 5])),
    (DNS10, {"B": "/wCA"}, 14533934253577680,
     dns([6, 8, 5, 10, 7, 3, 2, 1, 9, 4])),
    (PITFALL, {"S": "hello"}, 8815023923555918238,
     ['http://10.0.0.2:8000', 'http://10.0.0.1:8000', 'http://10.0.0.10:8000', 'http://10.0.0.9:8000']),
    (PITFALL, {"S": ""}, 8849112093580131862,
     ['http://10.0.0.1:8000', 'http://10.0.0.10:8000', 'http://10.0.0.9:8000', 'http://10.0.0.2:8000']),
    (PITFALL, {"S": "user_123"}, -4025731529809423594,
     ['http://10.0.0.10:8000', 'http://10.0.0.9:8000', 'http://10.0.0.1:8000', 'http://10.0.0.2:8000']),
    (PITFALL, {"B": "/wCA"}, 14533934253577680,
     ['http://10.0.0.2:8000', 'http://10.0.0.9:8000', 'http://10.0.0.1:8000', 'http://10.0.0.10:8000']),
    (PITFALL_PORT_80, {"S": "hello"}, 8815023923555918238,
     ['http://10.0.0.2', 'http://10.0.0.10', 'http://10.0.0.1', 'http://10.0.0.9']),
    (PITFALL_PORT_80, {"S": ""}, 8849112093580131862,
     ['http://10.0.0.10', 'http://10.0.0.1', 'http://10.0.0.9', 'http://10.0.0.2']),
    (PITFALL_PORT_80, {"S": "user_123"}, -4025731529809423594,
     ['http://10.0.0.1', 'http://10.0.0.9', 'http://10.0.0.10', 'http://10.0.0.2']),
    (PITFALL_PORT_80, {"B": "/wCA"}, 14533934253577680,
     ['http://10.0.0.2', 'http://10.0.0.9', 'http://10.0.0.10', 'http://10.0.0.1']),
]

# (nodes, the batch's item keys, the batch's order)
BATCH_VOTE_VECTORS = [
    # batch of 4 S keys
    (THREE,
     [{"S": "hello"}, {"S": "user_123"}, {"S": ""}, {"S": "こんにちは"}],
     ['http://10.0.0.1:8000', 'http://10.0.0.2:8000', 'http://10.0.0.3:8000']),
    # batch mixed S/N/B
    (THREE,
     [{"N": "42"}, {"N": "-12345"}, {"B": "AQID"}, {"S": "hello"}, {"N": "3.14159"}],
     ['http://10.0.0.1:8000', 'http://10.0.0.2:8000', 'http://10.0.0.3:8000']),
    # batch of 2 keys (possible tie)
    (DNS10,
     [{"S": "hello"}, {"N": "42"}],
     dns([2, 8, 1, 10, 3, 4, 5, 6, 7, 9])),
]

ENDPOINT_ORDER_VECTORS = [
    (['http://A', 'http://a:80', 'http://a.example'],
     ['http://a', 'http://a.example']),
    (['http://A:80', 'http://a', 'http://a.example'],
     ['http://a', 'http://a.example']),
    (['https://B:443', 'https://a'],
     ['https://a', 'https://b']),
    (['HTTP://B:80', 'http://a'],
     ['http://a', 'http://b']),
    (['http://user@b:80/path?x=y#fragment', 'http://a'],
     ['http://a', 'http://b']),
    (['http://a:8080', 'http://a.example:80', 'http://a.example'],
     ['http://a.example', 'http://a:8080']),
    (['HTTP://[2001:DB8::1]:80/path', 'http://a'],
     ['http://[2001:db8::1]', 'http://a']),
]


@pytest.mark.parametrize("key,input_hex,expected", HASH_VECTORS, ids=lambda v: repr(v)[:24])
def test_hash_vectors(key, input_hex, expected):
    assert ref.key_bytes(key).hex() == input_hex
    assert ref.key_hash(key) == expected


def test_binary_keys_hash_their_decoded_bytes():
    for key, _, expected in HASH_VECTORS:
        if "B" in key:
            assert ref.key_hash({"B": base64.b64decode(key["B"])}) == expected


def test_high_bit_tail_bytes_are_unsigned():
    # Cassandra's Murmur3 sign-extends tail bytes and gives 6569165606467461771.
    assert ref.key_hash({"B": bytes.fromhex("ff0080")}) == 14533934253577680


@pytest.mark.parametrize("input_hex,expected", RAW_MURMUR_VECTORS)
def test_raw_murmur_vectors(input_hex, expected):
    assert ref.murmur_h1(bytes.fromhex(input_hex)) == expected


def test_a_full_block_is_hashed():
    # 0x01 || utf8('こんにちは') is exactly 16 bytes: one block, no tail.
    assert len(ref.key_bytes({"S": "こんにちは"})) == 16
    assert ref.key_hash({"S": "こんにちは"}) == -8746014667889746860


@pytest.mark.parametrize("value", [{"BOOL": True}, {"NULL": True}, {"SS": ["a"]}, {"S": "a", "N": "1"}, {},
                                   {"B": "not base64!"}, {"S": 5}, "S"])
def test_unusable_keys_have_no_hash(value):
    assert ref.key_bytes(value) is None
    with pytest.raises(ValueError):
        ref.key_hash(value)


def test_go_math_rand_sanity():
    assert ref.GoRand(1).int63() == 5577006791947779410


@pytest.mark.parametrize("seed,expected", SEEDED_PLAN_VECTORS, ids=lambda v: str(v)[:20])
def test_seeded_plan_vectors(seed, expected):
    ring = ref.canonical_ring(DNS10)
    assert ring == dns([1, 10, 2, 3, 4, 5, 6, 7, 8, 9])
    assert ref.seeded_order(ring, seed) == dns(expected)


@pytest.mark.parametrize("nodes,key,hash_,expected", AFFINITY_NODE_VECTORS, ids=lambda v: repr(v)[:30])
def test_affinity_node_vectors(nodes, key, hash_, expected):
    assert ref.key_hash(key) == hash_
    assert ref.plan(ref.canonical_ring(nodes), key) == expected
    # The input order of the nodes does not matter.
    assert ref.plan(ref.canonical_ring(list(reversed(nodes))), key) == expected


@pytest.mark.parametrize("nodes,keys,expected", BATCH_VOTE_VECTORS, ids=lambda v: repr(v)[:30])
def test_batch_vote_vectors(nodes, keys, expected):
    ring = ref.canonical_ring(nodes)
    assert ref.batch_order(ring, keys) == expected
    # Neither the items' order nor unusable items change the vote.
    assert ref.batch_order(ring, list(reversed(keys)) + [{"BOOL": True}]) == expected


def test_batch_without_usable_keys_has_no_order():
    assert ref.batch_order(ref.canonical_ring(THREE), [{"NULL": True}]) == []


@pytest.mark.parametrize("endpoints,expected", ENDPOINT_ORDER_VECTORS, ids=lambda v: repr(v)[:30])
def test_endpoint_order_vectors(endpoints, expected):
    assert ref.canonical_ring(endpoints) == expected


def test_node_endpoints_as_the_libraries_spell_them():
    assert ref.node_endpoint("10.0.0.1", 8000) == "http://10.0.0.1:8000"
    assert ref.node_endpoint("10.0.0.1", 80) == "http://10.0.0.1"
    assert ref.node_endpoint("10.0.0.1", 443, "https") == "https://10.0.0.1"
    assert ref.node_endpoint("10.0.0.1", 80, "https") == "https://10.0.0.1:80"
    assert ref.node_endpoint("2001:DB8::1", 8000) == "http://[2001:db8::1]:8000"


def test_choice_skips_down_then_prefers_active_over_quarantined():
    order = ["a", "b", "c", "d"]
    assert ref.choose(order) == "a"
    assert ref.choose(order, {"a": "down"}) == "b"
    assert ref.choose(order, {"a": "quarantined", "b": "down"}) == "c"
    assert ref.choose(order, {"a": "down", "b": "quarantined", "c": "down", "d": "down"}) == "b"
    assert ref.choose(order, dict.fromkeys(order, "down")) is None


def test_cluster_ring_answers_in_addresses():
    # The derived vector "3 ipv4 nodes port 8000; key S 'user_123'", and the
    # sort pitfall, through the helper the end-to-end tests use.
    r = ref.ClusterRing(["10.0.0.3", "10.0.0.1", "10.0.0.2"], 8000)
    assert r.plan({"S": "user_123"}) == ["10.0.0.2", "10.0.0.3", "10.0.0.1"]
    assert r.node({"N": "42"}) == "10.0.0.2"
    p = ref.ClusterRing(["10.0.0.2", "10.0.0.10", "10.0.0.1", "10.0.0.9"], 8000)
    assert p.ring[:2] == ["http://10.0.0.10:8000", "http://10.0.0.1:8000"]
    assert p.plan({"S": "user_123"}) == ["10.0.0.10", "10.0.0.9", "10.0.0.1", "10.0.0.2"]
    p80 = ref.ClusterRing(["10.0.0.2", "10.0.0.10", "10.0.0.1", "10.0.0.9"], 80)
    assert p80.node({"S": "hello"}) == "10.0.0.2"
    assert r.batch_node([{"S": "hello"}, {"S": "user_123"}, {"S": ""}, {"S": "こんにちは"}]) == "10.0.0.1"
