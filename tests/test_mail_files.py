"""File tier of the mail role: every mail file of both stacks passes the checker of the daemon that
reads it (Postfix, OpenDKIM, BIND for the zone with the DKIM key), on a candidate copy as the
converge script checks it, and each checker can fail."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from render.plan import LATE_MARK
from render.roles import dns as render_dns
from render.roles import mail
from tests.program_runs import STACKS, model
from tests.test_mail_render import MAIL_HOST, files, plan_file

pytestmark = pytest.mark.files


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if os.path.exists(p)), None)
    if path is None:
        pytest.fail(f"{tool} is not installed; run `make setup` (Debian package {package})")
    return path


@pytest.fixture(scope="module")
def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return pem, public


def filled(content: str, rsa_key) -> str:
    """A file's content with its late values as the host receives them (a real key where a key goes)."""
    pem, public = rsa_key

    def value(m):
        name = m.group(1)
        if name.startswith("mail/dkim-key/"):
            return pem
        if name.startswith("mail/dkim-record/"):
            return mail.dkim_record(None, public)
        return f"sample-{name.replace('/', '-')}"

    return LATE_MARK.sub(value, content)


@pytest.mark.parametrize("stack", STACKS)
def test_the_zone_publishes_the_mail_hosts_key_and_it_passes_named_checkzone(tmp_path, stack, rsa_key):
    m = model(stack)
    zone = m.site.domain
    selector = m.mail.dkim_selector
    body = plan_file(stack, "dns", render_dns.body_path(zone))
    assert body.late == [f"mail/dkim-record/{selector}"]
    staged = tmp_path / "zone"
    staged.write_text(filled(body.content, rsa_key))
    checkzone = [_need("named-checkzone", "bind9-utils"), *render_dns.CHECKZONE_ARGS, zone, str(staged)]
    result = subprocess.run(checkzone, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # The record's p= is the very key OpenDKIM signs with.
    line = next(x for x in staged.read_text().splitlines() if x.startswith(f"{selector}._domainkey"))
    text = "".join(re.findall(r'"([^"]*)"', line))
    assert text.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(text.split("p=", 1)[1])
    assert der == serialization.load_pem_public_key(rsa_key[1].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)



# --- every mail file passes its daemon's checker, on a candidate copy --------------------------------


def postfix_check(config_dir: Path) -> subprocess.CompletedProcess:
    """What the converge script's check_postfix runs: postconf on main.cf and master.cf, with any
    warning (an unknown parameter, a bad service line) counted as a failure."""
    postconf = _need("postconf", "postfix")
    errors = ""
    for flag in ("-n", "-M"):
        step = subprocess.run([postconf, "-c", str(config_dir), flag], capture_output=True, text=True, timeout=60)
        errors += step.stderr
        if step.returncode:
            return step
    return subprocess.CompletedProcess(step.args, 1 if errors.strip() else 0, "", errors)


def candidate(tmp_path: Path, host_files: dict[str, str]) -> Path:
    """Debian's /etc/postfix with the host's staged files over it, as check_postfix builds it."""
    d = tmp_path / "postfix"
    shutil.copytree("/etc/postfix", d, symlinks=True)
    for path, content in host_files.items():
        if path.startswith("/etc/postfix/"):
            target = d / path.removeprefix("/etc/postfix/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    settled(d)
    return d


def settled(config_dir: Path) -> None:
    """As check_postfix does: main.cf and master.cf dated 2 s back. Postfix re-reads a file changed
    within the last second until it is older (src/util/dict.c, dict_load_file_xt: "pausing to let
    file %s cool down", every 300 ms), which made each postconf here take 1-2 s of sleep."""
    past = time.time() - 2
    for name in ("main.cf", "master.cf"):
        os.utime(config_dir / name, (past, past))


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("host", [MAIL_HOST, "web1", "gateway"])
def test_postfix_config_passes_postconf_with_no_warning(tmp_path, stack, host):
    result = postfix_check(candidate(tmp_path, files(stack, host)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "path,bad",
    [(mail.MAIN_CF, "smtpd_relay_restrictons = permit\n"), (mail.MAIN_CF, "junk line\n"), (mail.MASTER_CF, "smtp inet n\n")],
    ids=["misspelt-parameter", "not-a-parameter", "short-service-line"],
)
def test_the_postfix_checker_refuses_a_broken_config(tmp_path, path, bad):
    host_files = files("prod", MAIL_HOST)
    host_files[path] += bad
    assert postfix_check(candidate(tmp_path, host_files)).returncode != 0


@pytest.fixture()
def safe_dir():
    """A directory no other user can write to, up to /: opendkim refuses keys under /tmp."""
    d = tempfile.mkdtemp(prefix="tmail-", dir="/run")
    yield Path(d)
    shutil.rmtree(d)


def opendkim_check(safe_dir: Path, conf: str, key: str) -> subprocess.CompletedProcess:
    """The converge's check_opendkim: the staged config pointed at the staged key, `opendkim -n`."""
    key_file = safe_dir / "key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    conf_file = safe_dir / "opendkim.conf"
    conf_file.write_text(re.sub(r"^(KeyFile\s+).*$", rf"\g<1>{key_file}", conf, flags=re.M))
    return subprocess.run([_need("opendkim", "opendkim"), "-n", "-x", str(conf_file)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("stack", STACKS)
def test_opendkim_config_passes_opendkims_own_test(safe_dir, stack, rsa_key):
    result = opendkim_check(safe_dir, files(stack, MAIL_HOST)[mail.OPENDKIM_CONF], rsa_key[0])
    assert result.returncode == 0, result.stderr


def test_opendkims_test_refuses_an_unknown_setting(safe_dir, rsa_key):
    conf = files("prod", MAIL_HOST)[mail.OPENDKIM_CONF] + "SignHeadres From\n"
    assert opendkim_check(safe_dir, conf, rsa_key[0]).returncode != 0


def test_the_key_checker_accepts_the_key_and_refuses_garbage(safe_dir, rsa_key):
    openssl = _need("openssl", "openssl")
    for content, ok in ((rsa_key[0], True), ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", False)):
        (safe_dir / "k").write_text(content)
        result = subprocess.run([openssl, "pkey", "-noout", "-in", str(safe_dir / "k")], capture_output=True, timeout=30)
        assert (result.returncode == 0) == ok


