"""Program tier: the first `pulumi up` is ordered and gated so pulumi-command 1.2.1's retry cannot trip it.

What the provider does with these inputs is in render/readiness.py and components/host_bootstrap.py
(connection.go at v1.2.1); the lab (tests/test_first_converge_lab.py) runs them with the same semantics.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from components.host_bootstrap import DIAL_ERROR_LIMIT, PROXY_DIAL_ERROR_LIMIT
from ops.mockrun import run_stack
from render.readiness import readiness_script
from model import derive
from tests.program_runs import STACKS, model, run, user_data

pytestmark = pytest.mark.files

COMMAND = "command:remote:Command"
BOOTSTRAP = "hypha:infra:HostBootstrap"
# The provider's own default for either leg (connection.go:32): about 11 s of retries.
PROVIDER_DEFAULT_DIAL_ERROR_LIMIT = 10


def _unwrap(value):
    """Mocks keep secret inputs wrapped: {sig: ..., value: ...}."""
    if isinstance(value, dict) and "value" in value and len(value) == 2:
        return value["value"]
    return value


def _commands(r, host: str) -> dict[str, object]:
    (component,) = [c for c in r.of_type(BOOTSTRAP) if c.name == host]
    return {c.name.removeprefix(f"{host}-"): c for c in r.children(component) if c.type == COMMAND}


def _urns_of(r, host: str) -> set[str]:
    (component,) = [c for c in r.of_type(BOOTSTRAP) if c.name == host]
    return {c.urn for c in r.children(component)} | {component.urn}


@pytest.mark.parametrize("stack", STACKS)
def test_every_lan_hosts_probe_and_converge_wait_for_the_gateways_converge(stack):
    m, r = model(stack), run(stack)
    gw = derive.gateway_name(m)
    gw_converge = _commands(r, gw)["converge"].urn
    assert set(_commands(r, gw)) == {"converge"}  # the gateway is dialled directly: no probe
    lan = [h for h in m.hosts if h != gw]
    assert lan
    for host in lan:
        cmds = _commands(r, host)
        assert set(cmds) == {"ready", "converge"}
        assert gw_converge in cmds["ready"].dependencies
        assert gw_converge in cmds["converge"].dependencies
        assert cmds["ready"].urn in cmds["converge"].dependencies
        # …and nothing of another LAN host: they converge side by side once the gateway is done.
        others = set().union(*(_urns_of(r, h) for h in lan if h != host))
        assert not others & set(cmds["converge"].dependencies)


@pytest.mark.parametrize("stack", STACKS)
def test_both_legs_retry_budgets_are_set_explicitly(stack):
    m, r = model(stack), run(stack)
    gw = derive.gateway_name(m)
    for host in m.hosts:
        conn = _unwrap(_commands(r, host)["converge"].inputs["connection"])
        assert conn["dialErrorLimit"] == DIAL_ERROR_LIMIT
        if host != gw:
            assert conn["proxy"]["dialErrorLimit"] == PROXY_DIAL_ERROR_LIMIT
            assert PROXY_DIAL_ERROR_LIMIT > PROVIDER_DEFAULT_DIAL_ERROR_LIMIT
            probe = _unwrap(_commands(r, host)["ready"].inputs["connection"])
            assert probe["host"] == derive.gateway_address(m) and "proxy" not in probe
            assert probe["dialErrorLimit"] == PROXY_DIAL_ERROR_LIMIT


@pytest.mark.parametrize("stack", STACKS)
def test_the_probe_runs_on_the_gateway_without_the_private_key_and_reruns_with_the_converge(stack):
    m, r = model(stack), run(stack)
    gw = derive.gateway_name(m)
    for host in (h for h in m.hosts if h != gw):
        cmds = _commands(r, host)
        ready = cmds["ready"].inputs
        assert ready["create"] == "sh -s"
        assert ready["stdin"] == readiness_script(m, host)
        assert "PRIVATE KEY" not in ready["stdin"] and m.access.deploy.public_key in ready["stdin"]
        assert "stdin" not in cmds["ready"].secret_inputs
        assert ready["triggers"][0] == _unwrap(cmds["converge"].inputs["triggers"])[0]


@pytest.mark.parametrize("stack", STACKS)
def test_no_command_sends_its_previous_output_back_as_environment(stack):
    for c in run(stack).of_type(COMMAND):
        assert c.inputs["addPreviousOutputInEnv"] is False, c.name


def test_two_runs_of_the_same_config_give_identical_command_inputs():
    """Nothing time-, order- or randomness-dependent in a connection, script or trigger (pulumi-command#447)."""
    for stack in STACKS:
        first, second = run(stack), run_stack(stack)

        def inputs(r):
            return {c.name: (c.inputs, sorted(c.secret_inputs), sorted(c.dependencies)) for c in r.of_type(COMMAND)}

        assert inputs(first) == inputs(second)
        # The SDK wraps every connection as one secret (pulumi_command/remote/command.py:443), on every
        # run alike: secret against secret compares by value; only secret against plain always differs
        # (pulumi sdk resource/properties_diff.go, DeepEquals), the diff #447 shows.
        assert all("connection" in c.secret_inputs for c in first.of_type(COMMAND))


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_exported_or_registered_comes_from_a_commands_stdout(stack):
    """A refresh empties stdout (pulumi-command#1377): no output may depend on it."""
    r = run(stack)
    for component in r.of_type(BOOTSTRAP):
        assert not any("stdout" in repr(v) for v in component.inputs.values())
    # The mocks echo inputs, so a command has no stdout: an export built on one would be missing or None.
    hosts = r.exports["hosts"]
    assert all(isinstance(h["converge_sha256"], str) and len(h["converge_sha256"]) == 64 for h in hosts.values())


@pytest.mark.parametrize("stack", STACKS)
def test_the_deploy_key_is_the_last_file_first_boot_writes(stack):
    m, r = model(stack), run(stack)
    for host in m.hosts:
        files = user_data(r, host)["write_files"]
        deferred = [f["path"] for f in files if f.get("defer")]
        assert deferred == [f"/etc/ssh/authorized_keys/{derive.DEPLOY_USER}"], host


def test_a_lan_host_without_the_gateways_bootstrap_is_refused():
    import pulumi

    from components.host_bootstrap import HostBootstrap, HostBootstrapArgs

    m = model("prod")
    host = next(h for h in m.hosts if h != derive.gateway_name(m))
    with pytest.raises(ValueError, match=rf"{host}: a LAN host's HostBootstrap needs the gateway's"):
        HostBootstrap(host, HostBootstrapArgs(m, host, None, pulumi.Output.secret("k"), "true\n"))


@pytest.mark.parametrize("stack", STACKS)
def test_the_probe_script_is_shellcheck_clean(tmp_path, stack):
    tool = shutil.which("shellcheck") or pytest.fail("shellcheck is missing (make setup)")
    m = model(stack)
    host = next(h for h in sorted(m.hosts) if h != derive.gateway_name(m))
    path = tmp_path / "ready.sh"
    path.write_text(readiness_script(m, host))
    result = subprocess.run([tool, "-s", "sh", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_probe_gives_up_after_its_timeout_with_a_clear_error(tmp_path):
    """Bounded: against an address nobody answers (a fake `ssh` here), it stops and says what to check."""
    m = model("prod")
    host = next(h for h in sorted(m.hosts) if h != derive.gateway_name(m))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ssh").write_text("#!/bin/sh\necho 'ssh: connect to host: Connection refused' >&2\nexit 255\n")
    (fake / "ssh").chmod(0o755)
    (fake / "sleep").write_text("#!/bin/sh\nexit 0\n")  # no real waiting in a unit test
    (fake / "sleep").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    result = subprocess.run(["sh", "-s"], input=readiness_script(m, host, timeout=6, interval=2),
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert f"{host} ({m.hosts[host].lan_ip}): sshd did not accept the deploy key for deploy within 6 s" in result.stderr


def test_the_probe_passes_once_sshd_accepts_the_key(tmp_path):
    m = model("prod")
    host = next(h for h in sorted(m.hosts) if h != derive.gateway_name(m))
    fake = tmp_path / "bin"
    fake.mkdir()
    # Refused twice, then the answer OpenSSH logs for SSH_MSG_USERAUTH_PK_OK (and still "denied": no private key).
    (fake / "ssh").write_text(
        f"#!/bin/sh\nn=$(cat {tmp_path}/n 2>/dev/null || echo 0); echo $((n+1)) >{tmp_path}/n\n"
        "if [ \"$n\" -lt 2 ]; then echo refused >&2; exit 255; fi\n"
        "echo 'debug1: Server accepts key: /tmp/x/deploy.pub ED25519 SHA256:x explicit' >&2\n"
        "echo 'deploy@h: Permission denied (publickey).' >&2; exit 255\n"
    )
    (fake / "ssh").chmod(0o755)
    (fake / "sleep").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sleep").chmod(0o755)
    result = subprocess.run(["sh", "-s"], input=readiness_script(m, host), capture_output=True, text=True,
                            env={"PATH": f"{fake}:/usr/bin:/bin"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{host} ({m.hosts[host].lan_ip}): sshd accepts the deploy key for deploy after 4 s"
    assert (tmp_path / "n").read_text().strip() == "3"


def test_first_boot_user_data_with_a_deferred_file_passes_cloud_init_schema(tmp_path):
    from tests.test_rendered_files import cloud_init_schema

    r = run("prod")
    host = derive.gateway_name(model("prod"))
    path = tmp_path / "user-data.yaml"
    doc = user_data(r, host)
    assert any(f.get("defer") for f in doc["write_files"])
    path.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    result = cloud_init_schema(path)
    assert result.returncode == 0, result.stdout + result.stderr
