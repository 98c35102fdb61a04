"""Checks of examples/docker-compose that need no Docker.

Docker is not available where the suite runs, so no container starts here.
What is checked instead, each with a case showing that the check can fail:

* envoy.yaml: the real Envoy of .venv runs ``--mode validate`` on a copy whose
  module path points at the built module. Validate mode really loads the
  module (a junk module is refused) and runs the filter's own configuration
  check (seeds outside allowed_cidrs are refused, with the filter's message),
  so a pass means the filter accepted the example's configuration. The file
  is also held to envoy/envoy.yaml: equal but for the documented fields.
* compose.yaml: the Compose Specification's JSON schema, as the pip package
  check-jsonschema ships it (``--builtin-schema vendor.compose-spec``,
  pinned in tests/requirements.txt), on the file as written
  and after Compose's variable interpolation; misspelled keys are refused.
  Then this example's own rules (:func:`project_problems`): three ScyllaDB
  nodes with authorization enforced, static addresses equal to the filter's
  seeds, the module mounted read-only where envoy.yaml loads it, the client
  pointed at Envoy, start-up order.
* The scripts the containers run: scylla/entrypoint.sh on a sample
  scylla.yaml with a stand-in for the image's entrypoint, init/create-role.sh
  with a stand-in cqlsh, and the client's workload against a simulated
  Alternator cluster (tests/e2e/harness) behind a real Envoy running the
  example's envoy.yaml with loopback addresses.
"""

from __future__ import annotations

import configparser
import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "docker-compose"
COMPOSE_FILE = EXAMPLE / "compose.yaml"
ENVOY_FILE = EXAMPLE / "envoy.yaml"
AUTH_FILE = EXAMPLE / "scylla" / "scylla-auth.yaml"
SHIPPED_ENVOY = REPO / "envoy" / "envoy.yaml"
WASM = REPO / "target" / "alternator_lb.wasm"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

from harness.alternator import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, SimulatedCluster  # noqa: E402
from harness.backend import MotoBackend  # noqa: E402
from harness.envoy import EnvoyProcess, envoy_binary, validate  # noqa: E402
from harness.net import free_port  # noqa: E402


# -- loading, as Compose does -------------------------------------------------

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of one string: ``$$``, ``$VAR``,
    ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``; ``?`` forms fail
    when unset."""
    def one(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4)
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op.endswith("?"):
                raise ValueError(f"required variable {name} is not set: {arg}")
            return arg
        return value or ""
    return _VAR.sub(one, text)


def interpolated(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolated(v, env) for k, v in node.items()}
    return node


def load_compose(text: str | None = None, env: dict[str, str] | None = None) -> dict:
    """compose.yaml (or ``text``) with YAML merge keys applied and variables
    interpolated with ``env`` (default: none set, so defaults apply)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text() if text is None else text)
    return interpolated(raw, env or {})


def filter_configuration(envoy_config: dict) -> dict:
    return json.loads(wasm_plugin(envoy_config)["configuration"]["value"])


def wasm_plugin(envoy_config: dict) -> dict:
    listener = envoy_config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [plugin] = [f for f in hcm["http_filters"] if f["name"] == "alternator_lb"]
    return plugin["typed_config"]["config"]


def socket_address(node: dict) -> tuple[str, int]:
    sa = node["address"]["socket_address"]
    return sa["address"], int(sa["port_value"])


def flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` / ``--name value`` flags of a container command."""
    out: dict[str, str] = {}
    i = 0
    while i < len(command):
        arg = command[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq and i + 1 < len(command) and not command[i + 1].startswith("--"):
                value = command[i + 1]
                i += 1
            out[name] = value
        i += 1
    return out


def mounts(service: dict) -> dict[str, dict]:
    """The service's mounts by target path (long syntax, as the example uses)."""
    return {m["target"]: m for m in service.get("volumes", [])}


def url_port(url: str) -> tuple[str, int]:
    m = re.fullmatch(r"http://([^:/]+):(\d+)/?", url)
    assert m, f"not an http://HOST:PORT URL: {url}"
    return m.group(1), int(m.group(2))


def crypt_sha512(password: str, salted_hash: str) -> str:
    """crypt(3) of ``password`` with the salt of ``salted_hash`` ($6$ form)."""
    salt = salted_hash.split("$")[2]
    out = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, password],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


# -- this example's rules ---------------------------------------------------

SCYLLA_NODES = ("scylla1", "scylla2", "scylla3")


def project_problems(compose: dict, envoy_config: dict, auth: dict) -> list[str]:
    """What is wrong with the example as a whole (empty when nothing): the
    relations between compose.yaml, envoy.yaml and scylla/scylla-auth.yaml
    that no schema knows."""
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    services = compose.get("services", {})
    scylla = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("scylladb/scylla:")
              and name != "init"}
    check(sorted(scylla) == list(SCYLLA_NODES), f"ScyllaDB node services are {sorted(scylla)}")
    [net_name] = compose["networks"]
    [ipam] = compose["networks"][net_name]["ipam"]["config"]
    subnet = ipaddress.ip_network(ipam["subnet"])
    auto_range = ipaddress.ip_network(ipam["ip_range"])

    # ScyllaDB: pinned image, authorization enforced, Alternator on one port.
    check(auth.get("alternator_enforce_authorization") is True, "alternator_enforce_authorization is not true")
    check(auth.get("authenticator") == "PasswordAuthenticator", "authenticator is not PasswordAuthenticator")
    check(auth.get("authorizer") == "CassandraAuthorizer", "authorizer is not CassandraAuthorizer")
    node_ips: dict[str, str] = {}
    alternator_ports = set()
    for name in SCYLLA_NODES:
        s = services.get(name, {})
        check(re.fullmatch(r"scylladb/scylla:\d{4}\.\d+\.\d+", s.get("image", "")) is not None,
              f"{name}: image {s.get('image')!r} is not a pinned scylladb/scylla release")
        check(s.get("entrypoint") == ["/bin/bash", "/etc/alternator-lb/entrypoint.sh"],
              f"{name}: entrypoint does not add scylla-auth.yaml")
        m = mounts(s).get("/etc/alternator-lb", {})
        check(m.get("type") == "bind" and m.get("source") == "./scylla" and m.get("read_only") is True,
              f"{name}: ./scylla is not mounted read-only at /etc/alternator-lb")
        f = flags(s.get("command", []))
        for flag, want in (("smp", "1"), ("memory", "750M"), ("overprovisioned", "1"),
                           ("developer-mode", "1")):
            check(f.get(flag) == want, f"{name}: --{flag} is {f.get(flag)!r}, not {want}")
        alternator_ports.add(f.get("alternator-port"))
        check(bool(f.get("alternator-write-isolation")), f"{name}: no --alternator-write-isolation")
        ip = s.get("networks", {}).get(net_name, {}).get("ipv4_address")
        check(ip is not None, f"{name}: no static address on network {net_name}")
        if ip:
            node_ips[name] = ip
            addr = ipaddress.ip_address(ip)
            check(addr in subnet and addr not in auto_range,
                  f"{name}: {ip} is not in {subnet} outside the automatic range {auto_range}")
        check("healthcheck" in s, f"{name}: no healthcheck")
    check(len(set(node_ips.values())) == len(node_ips), "ScyllaDB nodes share an address")
    check(len(alternator_ports) == 1, f"nodes disagree on --alternator-port: {alternator_ports}")
    alternator_port = next(iter(alternator_ports), None)
    for name in SCYLLA_NODES:
        seeds = flags(services.get(name, {}).get("command", [])).get("seeds", "")
        check(seeds.split(",") == [node_ips.get("scylla1")], f"{name}: --seeds={seeds} is not scylla1's address")
    for name, after in (("scylla2", "scylla1"), ("scylla3", "scylla2")):
        dep = services.get(name, {}).get("depends_on", {}).get(after, {})
        check(dep.get("condition") == "service_healthy", f"{name} does not wait for {after} to be healthy")

    # Envoy's filter: seeds are the nodes, nothing outside the network.
    fc = filter_configuration(envoy_config)
    check(sorted(fc.get("seeds", [])) == sorted(node_ips.values()),
          f"filter seeds {fc.get('seeds')} are not the nodes' addresses {sorted(node_ips.values())}")
    check(str(fc.get("port")) == str(alternator_port),
          f"filter port {fc.get('port')} is not the Alternator port {alternator_port}")
    check(fc.get("allowed_cidrs") == [str(subnet)], f"allowed_cidrs {fc.get('allowed_cidrs')} is not [{subnet}]")

    # The envoy service runs that file with the module where it says.
    envoy = services.get("envoy", {})
    check(re.fullmatch(r"envoyproxy/envoy:v1\.40\.\d+", envoy.get("image", "")) is not None,
          f"envoy image {envoy.get('image')!r} is not envoyproxy/envoy:v1.40.x")
    cmd = envoy.get("command", [])
    config_path = cmd[cmd.index("-c") + 1] if "-c" in cmd else None
    em = mounts(envoy)
    check(config_path in em and em[config_path].get("source") == "./envoy.yaml"
          and em[config_path].get("read_only") is True, "envoy: ./envoy.yaml is not mounted read-only at -c's path")
    module = wasm_plugin(envoy_config)["vm_config"]["code"]["local"]["filename"]
    wm = em.get(module, {})
    check(wm.get("type") == "bind" and wm.get("read_only") is True
          and wm.get("bind", {}).get("create_host_path") is False,
          f"envoy: the module is not bind-mounted read-only (without creating the host path) at {module}")
    check((EXAMPLE / wm.get("source", "")).resolve() == WASM,
          f"envoy: the module's default source {wm.get('source')!r} is the module scripts/build writes")
    listen_host, listen_port = socket_address(envoy_config["static_resources"]["listeners"][0])
    admin_host, admin_port = socket_address(envoy_config["admin"])
    check(listen_host == "0.0.0.0" and admin_host == "0.0.0.0", "envoy listener or admin is not on 0.0.0.0")
    check(sorted(envoy.get("ports", [])) == sorted([f"127.0.0.1:{listen_port}:{listen_port}",
                                                    f"127.0.0.1:{admin_port}:{admin_port}"]),
          f"envoy publishes {envoy.get('ports')}, not the listener and admin on 127.0.0.1")
    for name in SCYLLA_NODES:
        check(envoy.get("depends_on", {}).get(name, {}).get("condition") == "service_healthy",
              f"envoy does not wait for {name}")
    check("healthcheck" in envoy, "envoy: no healthcheck")

    # init: logs in with the superuser of scylla-auth.yaml, writes the key
    # where the client reads it.
    init = services.get("init", {})
    ienv = init.get("environment", {})
    check(ienv.get("SCYLLA_HOST") in node_ips.values(), f"init: SCYLLA_HOST {ienv.get('SCYLLA_HOST')} is no node")
    check(ienv.get("SUPERUSER") == auth.get("auth_superuser_name"), "init: SUPERUSER is not auth_superuser_name")
    salted = str(auth.get("auth_superuser_salted_password", ""))
    check(salted.startswith("$6$") and crypt_sha512(str(ienv.get("SUPERUSER_PASSWORD")), salted) == salted,
          "init: SUPERUSER_PASSWORD does not match auth_superuser_salted_password")
    for name in SCYLLA_NODES:
        check(init.get("depends_on", {}).get(name, {}).get("condition") == "service_healthy",
              f"init does not wait for {name}")
    cred_dir = ienv.get("CREDENTIALS_DIR")
    init_vol = mounts(init).get(cred_dir, {})
    check(init_vol.get("type") == "volume" and init_vol.get("read_only") is not True,
          f"init: no writable volume at CREDENTIALS_DIR {cred_dir}")

    # client: talks to Envoy, signs with the key init wrote.
    client = services.get("client", {})
    cenv = client.get("environment", {})
    check(url_port(cenv.get("DYNAMODB_ENDPOINT", "")) == ("envoy", listen_port),
          f"client: DYNAMODB_ENDPOINT {cenv.get('DYNAMODB_ENDPOINT')} is not Envoy's listener")
    check(url_port(cenv.get("ENVOY_ADMIN", "")) == ("envoy", admin_port),
          f"client: ENVOY_ADMIN {cenv.get('ENVOY_ADMIN')} is not Envoy's admin interface")
    cred_file = Path(str(cenv.get("AWS_SHARED_CREDENTIALS_FILE", "")))
    client_vol = mounts(client).get(str(cred_file.parent), {})
    check(client_vol.get("source") == init_vol.get("source") and client_vol.get("read_only") is True
          and cred_file.name == "credentials",
          f"client: AWS_SHARED_CREDENTIALS_FILE {cred_file} is not the file init writes")
    deps = client.get("depends_on", {})
    check(deps.get("envoy", {}).get("condition") == "service_healthy", "client does not wait for envoy")
    check(deps.get("init", {}).get("condition") == "service_completed_successfully",
          "client does not wait for init to finish")

    # Every file a bind mount or build names exists.
    for name, s in services.items():
        for m in s.get("volumes", []):
            if m.get("type") == "bind" and m["source"] != wm.get("source"):
                check((EXAMPLE / m["source"]).exists(), f"{name}: {m['source']} does not exist")
        if "build" in s:
            check((EXAMPLE / s["build"] / "Dockerfile").exists(), f"{name}: no Dockerfile in {s['build']}")
    return problems


# -- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="module")
def wasm(module) -> Path:
    """The module as it ships (scripts/build), which compose.yaml mounts."""
    assert module == WASM
    return WASM


@pytest.fixture(scope="module")
def envoy_config() -> dict:
    return yaml.safe_load(ENVOY_FILE.read_text())


def host_copy(config: dict, tmp_path: Path, module: Path, **filter_keys) -> Path:
    """The example's Envoy config with the module path of this machine (and
    filter keys replaced), written to a file."""
    config = copy.deepcopy(config)
    plugin = wasm_plugin(config)
    plugin["vm_config"]["code"]["local"]["filename"] = str(module)
    if filter_keys:
        fc = filter_configuration(config)
        fc.update(filter_keys)
        plugin["configuration"]["value"] = json.dumps(fc)
    path = tmp_path / f"envoy-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- envoy.yaml ---------------------------------------------------------------

def test_envoy_is_1_40():
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"/1\.40\.\d+/", out), out


def test_envoy_config_validates_with_the_built_module(envoy_config, wasm, tmp_path):
    ok, out = validate(host_copy(envoy_config, tmp_path, wasm))
    assert ok, out


def test_validate_mode_loads_the_module(envoy_config, wasm, tmp_path):
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm not really" + os.urandom(512))
    ok, out = validate(host_copy(envoy_config, tmp_path, junk))
    assert not ok
    assert "Failed to load Wasm code" in out, out


def test_validate_mode_runs_the_filters_configuration_check(envoy_config, wasm, tmp_path):
    # Only the filter itself knows this rule, so a pass of the real file
    # above means the filter accepted the example's seeds and ranges.
    ok, out = validate(host_copy(envoy_config, tmp_path, wasm, allowed_cidrs=["192.0.2.0/24"]))
    assert not ok
    assert re.search(r'invalid configuration: key "seeds": \S+ is outside allowed_cidrs', out), out


def _without_example_fields(config: dict) -> dict:
    config = copy.deepcopy(config)
    config["admin"]["address"]["socket_address"] = None
    config["static_resources"]["listeners"][0]["address"]["socket_address"] = None
    plugin = wasm_plugin(config)
    plugin["vm_config"]["code"]["local"]["filename"] = None
    plugin["configuration"]["value"] = None
    return config


def test_envoy_config_differs_from_the_shipped_one_only_where_documented(envoy_config):
    shipped = yaml.safe_load(SHIPPED_ENVOY.read_text())
    assert _without_example_fields(envoy_config) == _without_example_fields(shipped)
    # In the filter's JSON, only the seeds and the added allowed_cidrs differ.
    ours, theirs = filter_configuration(envoy_config), filter_configuration(shipped)
    for fc in (ours, theirs):
        fc.pop("seeds")
        fc.pop("allowed_cidrs", None)
    assert ours == theirs


# -- compose.yaml: the Compose Specification ------------------------------------

def check_compose_schema(*files: Path) -> subprocess.CompletedProcess:
    assert CHECK_JSONSCHEMA.exists(), \
        "check-jsonschema is missing from .venv: run scripts/setup (tests/requirements.txt)"
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", *map(str, files)],
                          capture_output=True, text=True, timeout=60)


def test_compose_file_matches_the_compose_specification(tmp_path):
    # As written (what a user's editor or CI would check), and after
    # interpolation (what Compose itself validates).
    resolved = tmp_path / "compose.interpolated.json"
    resolved.write_text(json.dumps(load_compose()))
    r = check_compose_schema(COMPOSE_FILE, resolved)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("mutation, complaint", [
    # a misspelled service key
    (("    healthcheck:\n      # Envoy's", "    healtcheck:\n      # Envoy's"), "'healtcheck' was unexpected"),
    # a misspelled top-level key
    (("\nnetworks:\n  alternator:", "\nnetwork:\n  alternator:"), "'network' does not match"),
    # a value outside the allowed set
    (("condition: service_completed_successfully", "condition: service_done"), "service_done"),
])
def test_compose_schema_check_rejects_a_broken_file(tmp_path, mutation, complaint):
    old, new = mutation
    text = COMPOSE_FILE.read_text()
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new, 1))
    r = check_compose_schema(broken)
    assert r.returncode != 0
    assert complaint in r.stdout, r.stdout + r.stderr


# -- compose.yaml: this example's rules ----------------------------------------

def test_compose_file_fits_envoy_config_and_scylla_settings(envoy_config):
    auth = yaml.safe_load(AUTH_FILE.read_text())
    assert project_problems(load_compose(), envoy_config, auth) == []


def test_module_path_can_come_from_the_environment():
    compose = load_compose(env={"ALTERNATOR_LB_WASM": "/opt/alternator-lb/alternator_lb.wasm"})
    sources = [m["source"] for m in compose["services"]["envoy"]["volumes"]]
    assert "/opt/alternator-lb/alternator_lb.wasm" in sources


def _set(path: list, value):
    def mutate(compose, envoy, auth):
        node = {"compose": compose, "envoy": envoy, "auth": auth}
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _set_filter(key, value):
    def mutate(compose, envoy, auth):
        plugin = wasm_plugin(envoy)
        fc = json.loads(plugin["configuration"]["value"])
        fc[key] = value
        plugin["configuration"]["value"] = json.dumps(fc)
    return mutate


def _seeds_of_all_nodes(value):
    def mutate(compose, envoy, auth):
        for name in SCYLLA_NODES:
            cmd = compose["services"][name]["command"]
            compose["services"][name]["command"] = [value if c.startswith("--seeds=") else c for c in cmd]
    return mutate


@pytest.mark.parametrize("mutate, complaint", [
    (_set(["auth", "alternator_enforce_authorization"], False), "alternator_enforce_authorization"),
    (_set(["auth", "authorizer"], "AllowAllAuthorizer"), "authorizer"),
    (_set_filter("seeds", ["10.213.48.11", "10.213.48.12", "10.213.48.14"]), "filter seeds"),
    (_set(["compose", "services", "scylla3", "networks", "alternator", "ipv4_address"], "10.213.48.200"),
     "scylla3: 10.213.48.200"),
    (_seeds_of_all_nodes("--seeds=10.213.48.99"), "--seeds=10.213.48.99"),
    (_set(["compose", "services", "envoy", "volumes", 1, "read_only"], False), "module is not bind-mounted"),
    (_set(["compose", "services", "client", "environment", "DYNAMODB_ENDPOINT"], "http://scylla1:8000"),
     "DYNAMODB_ENDPOINT"),
    (_set(["compose", "services", "init", "environment", "SUPERUSER_PASSWORD"], "cassandra"), "SUPERUSER_PASSWORD"),
    (_set(["compose", "services", "scylla2", "image"], "scylladb/scylla:latest"), "scylla2: image"),
])
def test_project_checks_catch_a_mismatch(envoy_config, mutate, complaint):
    compose, envoy, auth = load_compose(), copy.deepcopy(envoy_config), yaml.safe_load(AUTH_FILE.read_text())
    mutate(compose, envoy, auth)
    problems = project_problems(compose, envoy, auth)
    assert any(complaint in p for p in problems), problems


# -- the scripts the containers run ---------------------------------------------

def test_shell_scripts_parse():
    for script in (EXAMPLE / "scylla" / "entrypoint.sh", EXAMPLE / "init" / "create-role.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_scylla_entrypoint_adds_the_settings_once(tmp_path):
    conf = tmp_path / "scylla.yaml"
    conf.write_text("cluster_name: 'Test Cluster'\nauthenticator: AllowAllAuthenticator\n"
                    "# authorizer: AllowAllAuthorizer\nnum_tokens: 256\n")
    image_entrypoint = tmp_path / "docker-entrypoint"
    image_entrypoint.write_text('#!/bin/sh\necho "image entrypoint: $*"\n')
    image_entrypoint.chmod(0o755)
    env = dict(os.environ, SCYLLA_YAML=str(conf), EXTRA_YAML=str(AUTH_FILE), IMAGE_ENTRYPOINT=str(image_entrypoint))
    command = load_compose()["services"]["scylla1"]["command"]
    for _ in range(2):  # a restarted container runs it again
        out = subprocess.run(["bash", str(EXAMPLE / "scylla" / "entrypoint.sh"), *command],
                             env=env, capture_output=True, text=True, check=True).stdout
        assert f"image entrypoint: {' '.join(command)}" in out
    merged = yaml.safe_load(conf.read_text())
    auth = yaml.safe_load(AUTH_FILE.read_text())
    assert merged == {"cluster_name": "Test Cluster", "num_tokens": 256, **auth}
    # Each key once, so no duplicate is left for ScyllaDB to resolve, and
    # the salted password's "$" arrive as written.
    text = conf.read_text()
    for key in auth:
        assert len(re.findall(rf"^{key}:", text, re.M)) == 1, text
    assert merged["auth_superuser_salted_password"].startswith("$6$AlternatorLbDemo$")


FAKE_CQLSH = r"""#!/bin/bash
# Stand-in for cqlsh: logs the statement, answers the role query like cqlsh.
statement=${@: -1}
echo "$statement" >>"$FAKE_LOG"
case "$statement" in
  *"FROM system.roles"*)
    [ -n "${FAKE_NO_SYSTEM_ROLES:-}" ] && { echo "InvalidRequest: unconfigured table roles" >&2; exit 2; }
    ;&
  *"FROM system_auth.roles"*)
    printf '\n salted_hash\n%s\n %s\n\n(1 rows)\n' "$(printf -- '-%.0s' {1..40})" "$FAKE_HASH" ;;
  *"FROM system_auth_v2.roles"*)
    printf '\n salted_hash\n-----------\n\n(0 rows)\n' ;;
esac
"""


@pytest.mark.parametrize("old_release", [False, True], ids=["system.roles", "system_auth.roles"])
def test_init_script_writes_the_roles_key_as_aws_credentials(tmp_path, old_release):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cqlsh").write_text(FAKE_CQLSH)
    (bindir / "cqlsh").chmod(0o755)
    init_env = load_compose()["services"]["init"]["environment"]
    salted = "$6$someSalt$" + "x" * 86
    env = dict(os.environ, **init_env)
    env.update(PATH=f"{bindir}:{os.environ['PATH']}", CREDENTIALS_DIR=str(tmp_path / "credentials"),
               FAKE_LOG=str(tmp_path / "cql.log"), FAKE_HASH=salted)
    if old_release:
        env["FAKE_NO_SYSTEM_ROLES"] = "1"
    r = subprocess.run(["bash", str(EXAMPLE / "init" / "create-role.sh")], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    statements = (tmp_path / "cql.log").read_text()
    role = init_env["ROLE"]
    assert f"CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = '{init_env['ROLE_PASSWORD']}' AND LOGIN = true" \
        in statements
    assert f"GRANT CREATE ON ALL KEYSPACES TO {role}" in statements
    # The file botocore reads (it parses it without interpolation, so "$" is fine).
    parser = configparser.RawConfigParser()
    parser.read(tmp_path / "credentials" / "credentials")
    assert dict(parser["default"]) == {"aws_access_key_id": role, "aws_secret_access_key": salted}


def test_client_script_compiles(tmp_path):
    subprocess.run([sys.executable, "-m", "py_compile", str(EXAMPLE / "client" / "workload.py")],
                   check=True, env=dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp_path)))


def test_client_workload_through_envoy_with_the_example_config(envoy_config, wasm, tmp_path):
    """client/workload.py, unchanged, against a simulated 3-node cluster (SigV4
    checked like Alternator with authorization enforced) behind the real
    Envoy running envoy.yaml with only addresses made local."""
    with MotoBackend(log_dir=tmp_path) as backend, SimulatedCluster(backend.url, n_nodes=3) as cluster:
        config = copy.deepcopy(envoy_config)
        listener_port, admin_port = free_port(), free_port()
        config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
        config["static_resources"]["listeners"][0]["address"]["socket_address"].update(
            address="127.0.0.1", port_value=listener_port)
        plugin = wasm_plugin(config)
        plugin["vm_config"]["code"]["local"]["filename"] = str(wasm)
        fc = filter_configuration(config)
        fc.update(seeds=cluster.addresses, port=cluster.port, allowed_cidrs=["127.0.0.0/8"])
        plugin["configuration"]["value"] = json.dumps(fc)

        credentials = tmp_path / "credentials"
        credentials.write_text(f"[default]\naws_access_key_id = {DEFAULT_ACCESS_KEY}\n"
                               f"aws_secret_access_key = {DEFAULT_SECRET_KEY}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(DYNAMODB_ENDPOINT=f"http://127.0.0.1:{listener_port}",
                   ENVOY_ADMIN=f"http://127.0.0.1:{admin_port}",
                   AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_CONFIG_FILE=os.devnull,
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   TABLE=f"compose_example_{uuid.uuid4().hex[:8]}", ITEMS="25")
        with EnvoyProcess(config, workdir=tmp_path / "envoy"):
            r = subprocess.run([sys.executable, str(EXAMPLE / "client" / "workload.py")], env=env,
                               capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "OK: requests spread over 3 nodes" in r.stdout, r.stdout
        for addr in cluster.addresses:
            assert re.search(rf"^  {re.escape(addr)}:{cluster.port}\s+[1-9]", r.stdout, re.M), r.stdout
        assert sum(cluster.signature_failures().values()) == 0
