"""File tier: what the program uploads is checked by the real tools that will read it."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from render.roles.base import SSHD_DROPIN as SSHD_DROPIN_PATH
from tests.program_runs import SNIPPET, STACKS, run, snippet_source
from tests.tools import sshd_runtime_dir

pytestmark = pytest.mark.files

CLOUD_INIT = shutil.which("cloud-init")
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def _tool(path, package):
    if path is None:
        pytest.fail(f"{package} is not installed; run `make setup` (Debian package {package})")
    return path


def _snippets():
    for stack in STACKS:
        for res in sorted(run(stack).of_type(SNIPPET), key=lambda r: r.name):  # registration order varies
            yield pytest.param(stack, res.name, snippet_source(res)["data"], id=f"{stack}-{res.name}")


def cloud_init_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool(CLOUD_INIT, "cloud-init"), "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# `cloud-init schema --config-file F` for many files in one interpreter: the CLI's own handler
# (cloudinit/config/schema.py handle_schema_args, what `cloud-init schema` dispatches to), called
# once per file with the CLI's arguments, its exit status and output kept per file. One cloud-init
# start-up costs ~1 s of CPU, and every snippet of both stacks is checked.
_SCHEMA_BATCH = r"""
import argparse, contextlib, io, json, sys
from cloudinit.config.schema import handle_schema_args
out = []
for path in sys.argv[1:]:
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            handle_schema_args("schema", argparse.Namespace(config_file=path, docs=None, system=False, annotate=False))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out.append({"path": path, "returncode": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
print(json.dumps(out))
"""


def _cloud_init_python() -> str:
    """The interpreter cloud-init runs under (its script's #! line), which imports its package."""
    return Path(_tool(CLOUD_INIT, "cloud-init")).read_text().split("\n", 1)[0].removeprefix("#!").strip()


@lru_cache(maxsize=None)
def _schema_verdicts() -> dict[str, subprocess.CompletedProcess]:
    """Every snippet's `cloud-init schema` verdict by test id, from one run of the batch above."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for param in _snippets():
            paths[param.id] = Path(tmp) / f"{param.id}.yaml"
            paths[param.id].write_text(param.values[2])
        done = subprocess.run([_cloud_init_python(), "-c", _SCHEMA_BATCH, *map(str, paths.values())], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        by_path = {r["path"]: r for r in json.loads(done.stdout)}
        return {
            id_: subprocess.CompletedProcess([CLOUD_INIT, "schema", "--config-file", str(path)], r["returncode"], r["stdout"], r["stderr"])
            for id_, path in paths.items() for r in [by_path[str(path)]]
        }


@pytest.mark.parametrize("stack,name,document", list(_snippets()))
def test_every_cloud_init_file_passes_cloud_init_schema(request, stack, name, document):
    result = _schema_verdicts()[request.node.callspec.id]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_the_batched_schema_check_refuses_what_the_cli_refuses(tmp_path):
    """The batch above is the CLI's handler: the same broken document fails it too, naming the key."""
    document = next(iter(_snippets())).values[2].replace("ssh_pwauth: false", "ssh_pwauth: [1, 2]")
    path = tmp_path / "user-data.yaml"
    path.write_text(document)
    done = subprocess.run([_cloud_init_python(), "-c", _SCHEMA_BATCH, str(path)], capture_output=True, text=True, timeout=120)
    [result] = json.loads(done.stdout)
    assert result["returncode"] != 0 and "ssh_pwauth" in result["stdout"] + result["stderr"]


def test_cloud_init_schema_rejects_a_broken_document(tmp_path):
    """The check above can fail: the same tool refuses a document with a wrongly typed key."""
    document = next(iter(_snippets())).values[2].replace("ssh_pwauth: false", "ssh_pwauth: [1, 2]")
    path = tmp_path / "user-data.yaml"
    path.write_text(document)
    result = cloud_init_schema(path)
    assert result.returncode != 0
    assert "ssh_pwauth" in result.stdout + result.stderr


@pytest.fixture(autouse=True, scope="module")
def _sshd_runtime_dir():
    sshd_runtime_dir()


def _sshd_config(tmp_path: Path, dropins: dict[str, str]) -> Path:
    """A minimal main config that includes a drop-in directory, like Debian's /etc/ssh/sshd_config."""
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    confd = tmp_path / "sshd_config.d"
    confd.mkdir()
    for name, text in dropins.items():
        (confd / name).write_text(text)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {confd}/*.conf\nHostKey {key}\nUsePAM yes\n")
    return main


def _effective(main: Path) -> dict[str, str]:
    """`sshd -T` output as key -> value; keys it prints once per value (allowusers) are joined."""
    out = subprocess.run(
        [_tool(SSHD, "openssh-server"), "-T", "-f", str(main), "-C", "user=alice,host=x,addr=192.0.2.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    values: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, []).append(value)
    return {k: " ".join(v) for k, v in values.items()}


def _dropin(stack: str, host: str = "gateway") -> tuple[str, str]:
    res = next(r for r in run(stack).of_type(SNIPPET) if r.name == f"{host}-user-data")
    entry = next(f for f in yaml.safe_load(snippet_source(res)["data"])["write_files"] if f["path"] == SSHD_DROPIN_PATH)
    return Path(entry["path"]).name, entry["content"]


@pytest.mark.parametrize("stack", STACKS)
def test_sshd_dropin_passes_sshd_t(tmp_path, stack):
    name, content = _dropin(stack)
    main = _sshd_config(tmp_path, {name: content})
    result = subprocess.run([_tool(SSHD, "openssh-server"), "-t", "-f", str(main)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_sshd_dropin_wins_over_cloud_inits_own_file(tmp_path):
    """cloud-init writes 50-cloud-init.conf with `PasswordAuthentication yes` when ssh_pwauth is on;
    sshd keeps the first value it reads, so our earlier-sorting drop-in still decides."""
    name, content = _dropin("prod")
    assert Path(SSHD_DROPIN_PATH).name == name
    main = _sshd_config(tmp_path, {name: content, "50-cloud-init.conf": "PasswordAuthentication yes\nPermitRootLogin yes\n"})
    effective = _effective(main)
    assert effective["passwordauthentication"] == "no"
    assert effective["permitrootlogin"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["authenticationmethods"] == "publickey"
    assert set(effective["allowusers"].split()) == {"alice", "bob", "deploy"}


def test_a_dropin_sorting_after_cloud_init_would_lose(tmp_path):
    """The ordering matters: the same drop-in named 60-* is overridden by 50-cloud-init.conf."""
    _, content = _dropin("prod")
    main = _sshd_config(tmp_path, {"60-late.conf": content, "50-cloud-init.conf": "PasswordAuthentication yes\n"})
    assert _effective(main)["passwordauthentication"] == "yes"


@pytest.mark.parametrize("stack", STACKS)
def test_the_bastion_forwards_only_to_lan_hosts_ssh_and_shows_no_debian_patch_level(tmp_path, stack):
    from render.roles.base import jump_targets
    from tests.program_runs import model

    name, content = _dropin(stack)
    effective = _effective(_sshd_config(tmp_path, {name: content}))
    assert effective["allowtcpforwarding"] == "local"  # no -R
    # -D and -L open direct-tcpip channels too: they reach each LAN host's SSH and nothing else.
    assert sorted(effective["permitopen"].split()) == sorted(jump_targets(model(stack)))
    assert all(t.endswith(":22") for t in effective["permitopen"].split())
    assert effective["permitlisten"] == "none"


def test_hosts_behind_the_bastion_forward_nothing(tmp_path):
    name, content = _dropin("staging", "bw1")
    effective = _effective(_sshd_config(tmp_path, {name: content}))
    assert effective["allowtcpforwarding"] == "no"


def _banner(main: Path) -> str:
    """The version line a real sshd with this config sends, on a free loopback port."""
    import socket
    import time

    from lab.hosts import stop_process

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sshd = subprocess.Popen([_tool(SSHD, "openssh-server"), "-D", "-e", "-f", str(main), "-o", f"ListenAddress=127.0.0.1:{port}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    return c.makefile("rb").readline().decode().strip()
            except ConnectionRefusedError:
                if time.monotonic() > deadline or sshd.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        stop_process(sshd)


def test_the_ssh_banner_shows_no_debian_patch_level(tmp_path):
    name, content = _dropin("prod")
    banner = _banner(_sshd_config(tmp_path, {name: content}))
    assert banner.startswith("SSH-2.0-OpenSSH_") and "Debian" not in banner, banner
    # Without the line, Debian's sshd names its package revision: the check above can fail.
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "Debian" in _banner(_sshd_config(plain, {name: content.replace("DebianBanner no", "")}))
