"""Convergence, file tier: every file a converge script ships is accepted by the tool that reads it
(shellcheck, nft -c, visudo, sshd -t, wg-quick, apt-config, sh -n); the program tier is
tests/test_converge_plan.py."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from render import wire
from render.converge import converge_script, late_names
from render.roles import host_plan
from render.roles import mail as rmail
from model.derive import DEPLOY_USER
from model import derive
from tests.program_runs import STACKS, model
from tests.tools import need as _need

pytestmark = pytest.mark.files

# File tier: the daemons' own checkers on what the converge scripts ship.


def _all_hosts():
    for stack in STACKS:
        for host in model(stack).hosts:
            yield pytest.param(stack, host, id=f"{stack}-{host}")


@pytest.mark.parametrize("stack,host", list(_all_hosts()))
def test_converge_script_is_shellcheck_clean(tmp_path, stack, host):
    path = tmp_path / "converge.sh"
    path.write_text(converge_script(model(stack), host))
    result = subprocess.run([_need("shellcheck", "shellcheck"), "-s", "sh", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_shellcheck_would_catch_a_broken_script(tmp_path):
    path = tmp_path / "converge.sh"
    path.write_text(converge_script(model("prod"), "bw1").replace('"$STAGE/changed"', "$STAGE/changed", 1) + "\necho $undefined_thing\n")
    assert subprocess.run([_need("shellcheck", "shellcheck"), "-s", "sh", str(path)], capture_output=True).returncode != 0


def _nft_check(path: str) -> list[str]:
    """`nft -c` as on the host, where the converge made the accounts before it checks (the gateway's
    `meta skuid "deploy"` names one, and nft resolves it): here in a user, mount and network namespace
    whose /etc/passwd also has the deploy user."""
    passwd = Path(path).with_name("passwd-with-deploy")
    passwd.write_text(Path("/etc/passwd").read_text() + f"{DEPLOY_USER}:x:1999:1999::/home/{DEPLOY_USER}:/bin/sh\n")
    script = 'mount --bind "$1" /etc/passwd && exec "$2" -c -f "$3"'
    return [_need("unshare", "util-linux"), "-rmn", "sh", "-c", script, "sh", str(passwd), _need("nft", "nftables"), path]


# The converge's checkers (render/wire.py's table) as this machine runs them: the table's argv with
# the command found here; nft in a namespace that has the deploy user; the zone's origin read here
# as the host's shell reads it. tests/test_wire.py holds every table name to a test of it.
def _table_argv(name: str):
    return lambda p: wire.CHECKERS[name].command(p, _need)


CHECKERS = {
    "nftables": lambda p: _nft_check(p),
    **{name: _table_argv(name) for name in ("sudoers", "apt", "shell", "authorized_keys", "known_hosts", "named-checkconf")},
    "named-checkzone": lambda p: [
        _need("named-checkzone", "bind9-utils"), "-q", "-k", "fail", "-m", "fail", "-M", "fail", "-n", "fail",
        "-S", "fail", "-i", "local", _origin(p), p,
    ],
}


def _origin(path: str) -> str:
    """The zone name, from the $ORIGIN line, as the converge script reads it."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("$ORIGIN"):
            return line.split()[1].rstrip(".")
    return "missing-origin.invalid"


def _sample(name: str) -> str:
    """A real-looking late value of its kind (a key where a key goes), as the host would receive it."""
    from lab.stack import ssh_keypair

    if name.startswith("hostkey/"):  # hostkey/<host>/<type>-<half>: an Ed25519 pair stands in for both types
        pair = ssh_keypair(name.rsplit("-", 1)[0])
        return pair.private_openssh if name.endswith("-private") else pair.public_line + "\n"
    kind = name.split("/")[-2] if name.count("/") >= 2 else ""
    if kind == "ssh-pubkey":
        return ssh_keypair(name).public_line
    if kind == "ssh-key":
        return ssh_keypair(name).private_openssh
    if kind in ("dkim-key", "dkim-record"):  # mail/dkim-key/<selector>: an RSA key and its record's p=
        private, public = _rsa_keypair()
        return private if kind == "dkim-key" else rmail.dkim_record(None, public)
    return f"sample-{name.replace('/', '-')}"


@lru_cache(maxsize=1)
def _rsa_keypair() -> tuple[str, str]:
    """(private PEM, public PEM) of one RSA 2048 key, made once: a DKIM key as the program makes it."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption()).decode()
    return private, key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()


def _files(checker: str):
    from render.plan import LATE_MARK

    for stack in STACKS:
        for host in model(stack).hosts:
            for f in host_plan(model(stack), host).files:
                if f.check == checker:
                    content = LATE_MARK.sub(lambda m: _sample(m.group(1)), f.content)
                    yield pytest.param(f.path, content, id=f"{stack}-{host}-{Path(f.path).name}")


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_every_managed_file_passes_its_daemons_checker(tmp_path, checker):
    files = list(_files(checker))
    assert files, f"no file uses the {checker} checker"
    for param in files:
        path, content = param.values
        staged = tmp_path / Path(path).name
        staged.write_text(content)
        result = subprocess.run(CHECKERS[checker](str(staged)), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{param.id}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "checker,bad",
    [
        ("nftables", "table inet hypha { chain input { tcp dport 22 acept } }\n"),
        ("sudoers", "alice ALL=(ALL NOPASSWD ALL\n"),
        ("apt", 'APT::Periodic::Update-Package-Lists "1"\n'),
        ("shell", 'ARGS="--web.listen-address=1\n'),
        ("authorized_keys", "ssh-ed25519 not-base64!!\n"),
        ("known_hosts", "10.0.1.17 ssh-ed25519 not-base64!!\n"),
        ("named-checkconf", 'zone "hypha.coop" { type primary; file "/x" }\n'),
        ("named-checkzone", "$ORIGIN hypha.coop.\n$TTL 300\n@ IN A 203.0.113.999\n"),
    ],
)
def test_each_checker_rejects_a_broken_file(tmp_path, checker, bad):
    staged = tmp_path / "broken"
    staged.write_text(bad)
    assert subprocess.run(CHECKERS[checker](str(staged)), capture_output=True, timeout=60).returncode != 0


@pytest.mark.parametrize("stack", STACKS)
def test_wireguard_config_parses_and_has_a_peer_per_login_with_a_key(tmp_path, stack):
    m = model(stack)
    (wg,) = [f for f in host_plan(m, derive.gateway_name(m)).files if f.path == "/etc/wireguard/wg0.conf"]
    assert wg.mode == "0600" and "PrivateKey" not in wg.content
    staged = tmp_path / "wg0.conf"
    staged.write_text(wg.content)
    result = subprocess.run([_need("wg-quick", "wireguard-tools"), "strip", str(staged)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peers = [line.split(" = ")[1] for line in result.stdout.splitlines() if line.startswith("PublicKey")]
    assert peers == [p.public_key for p in derive.vpn_peers(m)]
    assert {p.person for p in derive.vpn_peers(m)} == {
        n for n in derive.login_people(m) if m.people[n].wireguard is not None
    }


def test_a_late_value_reaches_the_file_but_never_the_rendered_script(tmp_path):
    """Secrets and generated keys travel as placeholders, filled only on the way to the host's stdin."""
    from render.converge import fill, late_names
    from render.plan import ManagedFile, late

    stack = model("staging")
    plan = host_plan(stack, "gateway")
    target = tmp_path / "live" / "secret.conf"
    secret = "s3cret with 'quotes', $dollars and\nnewlines"
    plan.files.append(ManagedFile(str(target), f"head\npassphrase={late('borg/test')}\ntail {late('borg/other')}\n", mode="0600"))
    script = converge_script(stack, "gateway", plan)
    host_keys = {n: _sample(n) for n in late_names(script) if n.startswith("hostkey/gateway/")}
    assert sorted(set(late_names(script)) - set(host_keys)) == ["borg/other", "borg/test"]
    assert secret not in script and "s3cret" not in script
    with pytest.raises(KeyError, match="borg/other"):
        fill(script, {"borg/test": secret, **host_keys})
    filled = fill(script, {"borg/test": secret, "borg/other": "key", **host_keys})
    assert "@@HYPHA_LATE" not in filled and late_names(filled) == []

    # Run the script's own stage() on the file's heredoc: the staged bytes are the file with the values in.
    stage_fn = filled[filled.index("stage() {"):]
    stage_fn = stage_fn[: stage_fn.index("\n}\n") + 3]
    start = filled.rindex("PIECES=1 stage ", 0, filled.index(str(target)))  # the appended file's call
    call = filled[start: filled.index("\nHYPHA_EOF\n", start) + len("\nHYPHA_EOF\n")]
    (tmp_path / "stage").mkdir()
    out = subprocess.run(
        ["sh", "-euc", f'STAGE={tmp_path}/stage\n{stage_fn}{call}\ncat "$STAGE"/f*'],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout == f"head\npassphrase={secret}\ntail key\n"
