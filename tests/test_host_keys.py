"""Program tier: every host's SSH identity is made by the program, delivered by cloud-init and pinned everywhere."""

from __future__ import annotations

import base64
import copy
import functools
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from components.host_keys import key_resource_name
from ops.mockrun import Run, plain, run_stack
from ops.plan import build_report, format_report
from render import hostkeys
from render.roles import host_plan
from model import derive
from tests.program_runs import SNIPPET, STACKS, child, model, raw, run, snippet_source
from tests.tools import sshd_runtime_dir

pytestmark = pytest.mark.files

COMMAND = "command:remote:Command"
KEY = "tls:index/privateKey:PrivateKey"


@functools.lru_cache(maxsize=None)
def _rsa_key_size(private_openssh: str) -> int:
    """The size of an RSA private key, loaded (and so checked whole) once per key text: loading a
    4096-bit key checks it, ~0.4 s, and the mocks give every host the same one."""
    return serialization.load_ssh_private_key(private_openssh.encode(), None).key_size


def _snippet_keys(r: Run, host: str) -> dict[str, str]:
    return yaml.safe_load(snippet_source(child(r, host, SNIPPET))["data"])["ssh_keys"]


def _known_hosts(r: Run) -> dict[str, tuple[list[str], str]]:
    """host -> (addresses, `type key`) from the `known_hosts` output, by the line's comment."""
    out = {}
    for line in r.exports["known_hosts"].splitlines():
        addresses, kind, key, comment = line.split(" ")
        out[comment.split("-", 2)[2]] = (addresses.split(","), f"{kind} {key}")  # hypha-<stack>-<host>
    return out


def _converges(r: Run) -> dict[str, dict]:
    return {c.parent_name: c for c in r.of_type(COMMAND) if c.name.endswith("-converge")}


@pytest.mark.parametrize("stack", STACKS)
def test_every_remote_command_pins_a_host_key_on_both_legs(stack):
    m, r = model(stack), run(stack)
    pins = {h: key for h, (_addrs, key) in _known_hosts(r).items()}
    gw = derive.gateway_name(m)
    commands = r.of_type(COMMAND)
    assert {c.parent_name for c in commands} == set(m.hosts)
    for c in commands:
        conn = plain(c.inputs["connection"])
        if c.name.endswith("-ready"):
            # The readiness probe runs on the gateway itself (components/host_bootstrap.py): its pin.
            assert conn["hostKey"] == pins[gw] and "proxy" not in conn, c.name
            continue
        assert conn["hostKey"] == pins[c.parent_name], c.name
        if c.parent_name == gw:
            assert "proxy" not in conn
        else:
            assert conn["proxy"]["hostKey"] == pins[gw], c.name
        assert conn["hostKey"].startswith("ssh-ed25519 ") and len(conn["hostKey"].split()) == 2


def test_two_runs_of_the_same_config_give_identical_connection_inputs():
    first, second = run("prod"), run_stack("prod")  # the session's run and a new one
    assert {c.urn: c.inputs["connection"] for c in first.of_type(COMMAND)} == {
        c.urn: c.inputs["connection"] for c in second.of_type(COMMAND)
    }
    assert first.exports["known_hosts"] == second.exports["known_hosts"]
    # The keys behind them too: an unchanged stack re-sends no converge and rewrites no snippet.
    for type_, value in ((COMMAND, lambda c: plain(c.inputs["stdin"])), (SNIPPET, snippet_source)):
        assert {x.urn: value(x) for x in first.of_type(type_)} == {x.urn: value(x) for x in second.of_type(type_)}


@pytest.mark.parametrize("stack", STACKS)
def test_known_hosts_output_matches_the_keys_the_snippets_deliver(stack):
    m, r = model(stack), run(stack)
    known = _known_hosts(r)
    assert set(known) == set(m.hosts)
    for host, (addresses, key) in known.items():
        delivered = _snippet_keys(r, host)
        assert hostkeys.pin(delivered["ed25519_public"]) == key
        # The private half the VM gets is the one behind that public key.
        private = serialization.load_ssh_private_key(delivered["ed25519_private"].encode(), None)
        derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        assert derived.decode() == key
        h = m.hosts[host]
        want = [str(a) for a in (h.public_ipv4, h.public_ipv6) if a] if host == derive.gateway_name(m) else []
        assert addresses == want + [str(h.lan_ip)]


@pytest.mark.parametrize("stack", STACKS)
def test_cloud_init_writes_the_programs_keys_and_makes_none(stack):
    m, r = model(stack), run(stack)
    for host in m.hosts:
        doc = yaml.safe_load(snippet_source(child(r, host, SNIPPET))["data"])
        assert doc["ssh_deletekeys"] is True
        assert set(doc["ssh_keys"]) == {"ed25519_private", "ed25519_public", "rsa_private", "rsa_public"}
        assert _rsa_key_size(doc["ssh_keys"]["rsa_private"]) == hostkeys.RSA_BITS  # ssh-audit's hardened policy wants RSA 4096 too
    keys = {k.name: k.inputs for k in r.of_type(KEY) if k.name.startswith("ssh-host-")}
    assert len(keys) == 2 * len(m.hosts)
    assert all(k["algorithm"] == "RSA" and k["rsaBits"] == 4096 for n, k in keys.items() if "-rsa-" in n)


@pytest.mark.parametrize("stack", STACKS)
def test_the_snippet_is_a_secret_and_no_private_host_key_is_in_clear_anywhere(stack):
    r = run(stack)
    privates = {}
    for host in model(stack).hosts:
        for name, value in _snippet_keys(r, host).items():
            if name.endswith("_private"):
                privates[f"{host}/{name}"] = value.split("\n")[4]  # inside the key body, past the common header
    for res in r.of_type(SNIPPET):
        assert "sourceRaw" in res.secret_inputs, res.name
    in_clear = [(f"{res.urn}.{key}", repr(value)) for res in r.resources if res.type != KEY
                for key, value in res.inputs.items() if key not in res.secret_inputs]
    leaks = [(where, name) for where, text in in_clear for name, needle in privates.items() if needle in text]
    assert leaks == []
    # The converge's stdin carries them (base64): it is a secret.
    for c in r.of_type(COMMAND):
        if c.name.endswith("-ready"):
            continue  # the readiness probe carries no key: render/readiness.py, public half of the deploy key only
        assert "stdin" in c.secret_inputs


@pytest.mark.parametrize("stack", STACKS)
def test_the_converge_keeps_the_host_keys_as_managed_files_that_reload_sshd(stack):
    m, r = model(stack), run(stack)
    for host, c in _converges(r).items():
        files = {f.path: f for f in host_plan(m, host).files}
        for kind in hostkeys.KEY_TYPES:
            for path in (hostkeys.key_path(kind), hostkeys.key_path(kind) + ".pub"):
                assert files[path].unit == "ssh" and files[path].mode == "0600" and files[path].late
        stdin = plain(c.inputs["stdin"])
        delivered = _snippet_keys(r, host)
        for name, value in delivered.items():
            assert base64.b64encode(value.encode()).decode() in stdin, f"{host}: {name} not in the converge"
        # No key is made on the host: cloud-init and the converge write the program's.
        assert "ssh-keygen -q -t" not in stdin and "ssh-keygen -t" not in stdin


def _rotated(stack: str, host: str, generation: int = 1) -> Run:
    cfg = raw(stack)
    cfg["hosts"][host]["ssh_host_key_generation"] = generation
    return run_stack(stack, raw=cfg)


@pytest.mark.parametrize("stack", STACKS)
def test_rotating_a_host_key_changes_its_snippet_pins_and_converge_and_nothing_else(stack):
    before, after = run(stack), _rotated(stack, "web1")
    kb, ka = _known_hosts(before), _known_hosts(after)
    assert ka["web1"][1] != kb["web1"][1]
    assert {h: v for h, v in ka.items() if h != "web1"} == {h: v for h, v in kb.items() if h != "web1"}
    assert _snippet_keys(after, "web1") != _snippet_keys(before, "web1")
    assert hostkeys.pin(_snippet_keys(after, "web1")["ed25519_public"]) == ka["web1"][1]
    cb, ca = _converges(before), _converges(after)
    assert plain(ca["web1"].inputs["connection"])["hostKey"] == ka["web1"][1]
    assert plain(ca["web1"].inputs["stdin"]) != plain(cb["web1"].inputs["stdin"])
    assert ca["web1"].inputs["triggers"] != cb["web1"].inputs["triggers"]  # the converge re-runs
    for host in set(ca) - {"web1"}:
        assert ca[host].inputs["connection"] == cb[host].inputs["connection"]
        assert plain(ca[host].inputs["stdin"]) == plain(cb[host].inputs["stdin"])
    names = {k.name for k in after.of_type(KEY)}
    assert key_resource_name("web1", "ed25519", 1) in names and key_resource_name("web1", "rsa", 1) in names
    assert key_resource_name("web1", "rsa", 0) not in names  # retired with the rotation


@pytest.mark.parametrize("stack", STACKS)
def test_the_rotation_logs_in_with_the_old_key_installs_the_new_and_the_converge_waits_for_it(stack):
    before, after = run(stack), _rotated(stack, "web1")
    old, new = _known_hosts(before)["web1"][1], _known_hosts(after)["web1"][1]
    (rotation,) = [c for c in after.of_type(COMMAND) if c.name == "web1-host-keys-g1"]
    assert [c for c in before.of_type(COMMAND) if "-host-keys-" in c.name] == []
    conn = plain(rotation.inputs["connection"])
    assert conn["hostKey"] == old
    assert conn["proxy"]["hostKey"] == _known_hosts(after)[derive.gateway_name(model(stack))][1]
    stdin = plain(rotation.inputs["stdin"])
    new_private = _snippet_keys(after, "web1")["ed25519_private"]
    assert base64.b64encode(new_private.encode()).decode() in stdin and "systemctl reload ssh" in stdin
    assert rotation.inputs["triggers"] == [new] and rotation.ignore_changes == ["connection"]
    assert rotation.urn in _converges(after)["web1"].dependencies


def test_rotating_the_gateway_makes_every_lan_host_wait_for_it():
    after = _rotated("prod", "gateway")
    (rotation,) = [c for c in after.of_type(COMMAND) if c.name == "gateway-host-keys-g1"]
    for host, c in _converges(after).items():
        assert rotation.urn in c.dependencies, host


def test_a_negative_generation_is_refused_with_its_key_path():
    from model.errors import ConfigError

    cfg = raw("prod")
    cfg["hosts"]["web1"]["ssh_host_key_generation"] = -1
    with pytest.raises(ConfigError, match=r"hosts\.web1\.ssh_host_key_generation"):
        run_stack("prod", raw=copy.deepcopy(cfg))


@pytest.mark.parametrize("stack", STACKS)
def test_backup_clients_pin_the_targets_key_and_learn_no_other(stack):
    from render.roles import backup

    m = model(stack)
    assert "StrictHostKeyChecking=yes" in backup.ssh_command() and "accept-new" not in backup.ssh_command()
    target = backup.backup_model.target_name(m)
    for client in backup.backup_model.clients(m):
        f = next(f for f in host_plan(m, client).files if f.path == backup.CLIENT_KNOWN_HOSTS)
        assert f.content == f"{m.hosts[target].lan_ip} " + hostkeys.late_name(target, "ed25519", "public").join(
            ["\x00late:", "\x00"])


def test_the_plan_says_where_the_keys_come_from_and_which_addresses_they_cover():
    report = build_report("prod")
    kh = report["known_hosts"]
    assert kh["output"] == "known_hosts"
    assert kh["hosts"]["gateway"]["addresses"] == ["203.0.113.12", "2001:db8:1::12", "10.0.1.12"]
    text = format_report(report)
    assert "pulumi stack output known_hosts" in text
    # Mock keys are stand-ins: the plan never shows one as if it were a host's real key.
    assert "AAAAC3NzaC1lZDI1NTE5" not in text


def _key_line(comment: str) -> str:
    from lab.stack import ssh_keypair

    return " ".join(ssh_keypair(comment).public_line.split()[:2])


def test_pins_come_from_a_file_the_environment_or_the_stack_output_never_from_nowhere(monkeypatch, tmp_path):
    from ops import remote

    line = f"203.0.113.12,10.0.1.12 {_key_line('gw')} hypha-prod-gateway\n"
    (tmp_path / "kh").write_text(line)
    for var in (remote.KNOWN_HOSTS_FILE_ENV, remote.KNOWN_HOSTS_ENV):
        monkeypatch.delenv(var, raising=False)
    assert remote.pins_for("prod", str(tmp_path / "kh")).lookup("10.0.1.12").get_name() == "ssh-ed25519"
    monkeypatch.setenv(remote.KNOWN_HOSTS_ENV, line)
    assert remote.pins_for("prod").lookup("203.0.113.12") is not None
    assert remote.pins_for("prod").lookup("10.0.1.13") is None
    monkeypatch.delenv(remote.KNOWN_HOSTS_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi CLI here: nothing to read the output with
    with pytest.raises(ValueError, match="--known-hosts FILE"):
        remote.pins_for("prod")
    with pytest.raises(ValueError, match=r"line 2: not a known_hosts line"):
        remote.Pins(line + "garbage\n")


def test_drift_reports_a_gateway_with_another_key_as_host_key_and_reads_nothing_behind_it(monkeypatch):
    import paramiko

    from ops import drift, remote

    stack = model("prod")
    gw = derive.gateway_name(stack)
    want, got = (paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
                 for kind, blob in (_key_line(c).split() for c in ("want", "got")))
    opened = []

    def refuse(stack_, host, *args, **kwargs):
        opened.append(host)
        raise remote.HostKeyMismatch(host, derive.gateway_address(stack_), got, want)

    monkeypatch.setattr(drift, "Session", refuse)
    report = drift.check(stack, "unused")
    assert opened == [gw]  # no host behind the gateway was dialled
    assert report.hosts[gw].status == "host-key" and report.exit_code == drift.ERROR
    assert f"{gw} (203.0.113.12): host key mismatch" in report.hosts[gw].error
    assert remote.fingerprint(got) in report.hosts[gw].error and remote.fingerprint(want) in report.hosts[gw].error
    assert all(h.status == "error" and not h.findings for n, h in report.hosts.items() if n != gw)
    assert f"HOST KEY: {gw} (203.0.113.12): host key mismatch" in drift.format_report(report)


def _rotation_run(tmp_path, values: dict) -> tuple[subprocess.CompletedProcess, Path]:
    """The rotation script on a directory standing in for /etc/ssh (and sshd's run dir), reload left out."""
    from render.converge import fill

    sshd_runtime_dir()  # the script's sshd -t, which needs the real one
    etc = tmp_path / "etc-ssh"
    etc.mkdir()
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
        (etc / name).write_text("old\n")
    script = fill(hostkeys.rotation_script("web1", 1), values)
    script = script.replace("/etc/ssh/", f"{etc}/").replace("/run/sshd", str(tmp_path / "run-sshd"))
    script = script.replace("systemctl reload ssh", "echo reloaded").replace("chown root:root", "true")
    path = tmp_path / "rotate.sh"
    path.write_text(script)
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=60), etc


def _rotation_values(material: dict) -> dict:
    return {hostkeys.late_name("web1", k, half): material[f"{k}-{half}"] for k in hostkeys.KEY_TYPES for half in ("private", "public")}


def test_the_rotation_script_is_shellcheck_clean_and_installs_the_new_keys(tmp_path):
    import shutil

    from lab.stack import host_key_material

    script = hostkeys.rotation_script("web1", 1)
    (tmp_path / "raw.sh").write_text(script)
    lint = subprocess.run([shutil.which("shellcheck") or "shellcheck", "-s", "sh", str(tmp_path / "raw.sh")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    material = host_key_material()
    result, etc = _rotation_run(tmp_path, _rotation_values(material))
    assert result.returncode == 0, result.stderr
    assert "reloaded" in result.stdout and "generation 1 in place" in result.stdout
    for kind in hostkeys.KEY_TYPES:
        for half, suffix in (("private", ""), ("public", ".pub")):
            f = etc / (Path(hostkeys.key_path(kind)).name + suffix)
            assert f.read_text() == material[f"{kind}-{half}"] and (f.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in etc.iterdir() if p.name.startswith("hypha-host-keys.")] == []  # stage removed


def test_a_rotation_with_a_mismatched_pair_changes_nothing(tmp_path):
    from lab.stack import host_key_material

    material, other = host_key_material(), host_key_material()
    result, etc = _rotation_run(tmp_path, _rotation_values({**material, "ed25519-public": other["ed25519-public"]}))
    assert result.returncode != 0 and "reloaded" not in result.stdout
    assert (etc / "ssh_host_ed25519_key").read_text() == "old\n" and not (etc / "ssh_host_rsa_key").exists()
