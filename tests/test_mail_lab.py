"""Host tier, mail end to end: the mail host converged as prod (Postfix MX, OpenDKIM, postsrsd, the DMARC
report parser, its ACME certificate from pebble through the lab's own DNS), a null client relaying
through it, and an "outside" receiver running Postfix with rspamd as the judge a large provider would be."""

from __future__ import annotations

import email
import email.policy
import email.utils
import io
import json
import os
import re
import subprocess
import time
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from model.load import build_stack
from lab.hosts import Lab, LabHost, stop_process
from lab.stack import PEBBLE_PORT, WebLabStack, _acme_server_ca, boot_and_converge, lab_stack
from lab.subnets import subnets
from ops.remote import Result, converge
from render.roles import mail as rmail
from render.roles import monitoring as mr
# pebble as the web lab runs it: in the root namespace, resolving through the lab's name server.
from tests.test_web_lab import _pebble_root, _start_pebble
from tests.tools import lab_ready

pytestmark = pytest.mark.lab

PREFIX = "tmail"
FRONT, LAN, VPN = subnets(PREFIX).front, subnets(PREFIX).lan, subnets(PREFIX).vpn
DOMAIN = "hypha.coop"
SELECTOR = "lab2026"
JUDGE = "judge"
# Units this machine enables that a lab host masks; the hosts here run them (the converge enables
# the mail host's, the outside host's are started by the test).
MAIL_UNITS = ("postfix.service", "postfix@-.service", "opendkim.service", "postsrsd.service",
              "prometheus-postfix-exporter.service", "certbot.timer")
OUTSIDE_UNITS = ("postfix.service", "postfix@-.service", "rspamd.service")
TOOLS = {"pebble": "pebble", "swaks": "swaks", "testssl": "testssl.sh", "rspamd": "rspamd", "postfix": "postfix",
         "opendkim": "opendkim", "opendkim-testkey": "opendkim-tools", "postsrsd": "postsrsd", "certbot": "certbot",
         "named": "bind9", "prometheus-postfix-exporter": "prometheus-postfix-exporter"}


@dataclass
class MailLab:
    lab: Lab
    ls: WebLabStack
    first: dict[str, Result]
    pebble_root: str
    tmp: Path
    seconds: float

    @property
    def stack(self):
        return self.ls.stack

    def front(self, host: str) -> str:
        return self.lab.hosts[host].front

    def converge(self, host: str) -> Result:
        return converge(self.stack, host, self.ls.keys["deploy"].private_openssh, self.ls.script(host))


def mail_lab_stack() -> WebLabStack:
    """A prod-like stack: gateway `gw`, name server `dns`, mail host `lists` (each with a front,
    "public", address), its DKIM key and ACME server made here; plus the lab host `ext`, outside the
    stack, on the front network only as far as the mail host is concerned."""
    f, n = list(FRONT.hosts()), list(LAN.hosts())
    base = lab_stack("prod", hosts=("gw",), members=(), front=FRONT, lan=LAN, vpn=VPN)
    raw = base.raw
    node = next(iter(raw["proxmox"]["nodes"]))
    first_id = raw["site"]["vm_ids"]["first"]

    def host(vm: int, i: int, roles: list[str]) -> dict:
        return {"vm_id": first_id + vm, "node": node, "lan_ip": str(n[i]), "public_ipv4": str(f[i]), "roles": roles}

    # Converged in this order after the gateway: the zone must answer before the mail host's
    # certbot asks pebble, which resolves mail.hypha.coop through it.
    raw["hosts"] = {"gw": host(1, 1, ["gateway"]), "dns": host(6, 3, ["dns"]), "lists": host(4, 4, ["mail"])}
    raw["network"]["resolvers"] = [str(n[3])]  # the name server: authoritative only, so PTR lookups end fast
    raw["services"] = {}
    raw["dns"] = {
        "nameservers": [{"name": f"ns1.{DOMAIN}"}],
        "mx": [{"host": "lists", "priority": 10}],
        "spf": {"qualifier": "-all"},
        "dmarc": {"policy": "quarantine", "rua": [f"dmarc-reports@{DOMAIN}"]},
    }
    raw["mail"] = {"dkim_selector": SELECTOR, "aliases": {"board": ["board@outside.example"]},
                   "postmaster": ["postmaster@outside.example"]}
    root = str(f[0])
    ca_pem, leaf_pem, leaf_key = _acme_server_ca(root)
    raw["tls"] = {"acme_directory": f"https://{root}:{PEBBLE_PORT}/dir", "email": f"hostmaster@{DOMAIN}", "ca_bundle": ca_pem}
    stack = build_stack(raw, "prod")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    # What components/late.py makes from the tls.PrivateKey (kinds rsa-keypair-*), from the lab's own key.
    late = {rmail.key_late(SELECTOR): pem, rmail.record_late(SELECTOR): rmail.dkim_record(None, public)}
    hosts = [LabHost("gw", str(n[1]), str(f[1])), LabHost("dns", str(n[3]), str(f[3])),
             LabHost("lists", str(n[4]), str(f[4])), LabHost("ext", str(n[9]), str(f[9]))]
    return WebLabStack(
        "prod", raw, stack, base.keys, base.wireguard, {h.name: h.front for h in hosts}, late=late,
        lab_hosts=hosts, lan_gateway=str(n[1]), acme_ca_pem=ca_pem, pebble_cert_pem=leaf_pem, pebble_key_pem=leaf_key,
        pebble_address=root,
    )


def _unmask(lab: Lab, host: str, units: tuple[str, ...]) -> None:
    """Lift the lab's masks of units this machine enables (lab/hosts.py masks what it does not know)."""
    d = lab.root_dir(host) / "etc/systemd/system"
    for unit in units:
        link = d / unit
        if link.is_symlink() and os.readlink(link) == "/dev/null":
            link.unlink()
    lab.run(host, ["systemctl", "daemon-reload"])


OUTSIDE_MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx.outside.example
mydestination = localhost, $myhostname
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
maillog_file = /var/log/mail.log
# The judge: every message received passes rspamd, which writes its verdict into the headers.
smtpd_milters = inet:127.0.0.1:11332
milter_default_action = tempfail
"""
RSPAMD_LOCAL = {
    "local.d/options.inc": 'dns {{ nameserver = ["{ns}:53"]; timeout = 2s; }}\n',
    # Lab addresses are private, and rspamd skips SPF and DMARC for its "local" networks; local.d
    # would append to the default list (10.0.0.0/8 among them), override.d replaces it.
    "override.d/options.inc": "local_addrs = [127.0.0.0/8];\n",
    "local.d/milter_headers.conf": "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n",
    # A verdict, never a refusal: the test reads every judgement from the delivered message.
    "local.d/actions.conf": "reject = 1000;\nadd_header = 999;\ngreylist = null;\nrewrite_subject = null;\n",
    "local.d/greylist.conf": "enabled = false;\n",
}


def _start_outside(lab: Lab, ns: str) -> None:
    root = lab.root_dir("ext")
    (root / "etc/postfix/main.cf").write_text(OUTSIDE_MAIN_CF)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text(f"nameserver {ns}\n")
    for name, text in RSPAMD_LOCAL.items():
        (root / "etc/rspamd" / name).write_text(text.format(ns=ns))
    lab.run("ext", ["useradd", "--create-home", JUDGE], check=False)
    _unmask(lab, "ext", OUTSIDE_UNITS)
    lab.run("ext", ["systemctl", "start", "rspamd.service", "postfix.service"], timeout=120)


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    lab_ready(TOOLS, "mail")
    started = time.monotonic()
    ls = mail_lab_stack()
    tmp = tmp_path_factory.mktemp("mail")
    with Lab(PREFIX, ls.lab_hosts, front=str(FRONT), lan=str(LAN), lan_gateway=ls.lan_gateway) as lab:
        pebble, log = _start_pebble(ls, tmp)
        try:
            for h in ("gw", "dns", "lists"):
                _unmask(lab, h, MAIL_UNITS)
            _start_outside(lab, ls.front_ip["dns"])
            first = boot_and_converge(lab, ls)
            yield MailLab(lab, ls, first, _pebble_root(ls), tmp, time.monotonic() - started)
        finally:
            stop_process(pebble)
            print(f"mail lab: pebble log {log}; lab timings {lab.timings}")


# --- helpers -----------------------------------------------------------------------------------------


def swaks(ml: MailLab, via: str, server: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """swaks run in `via`'s network namespace (an outside machine's view), never failing by itself."""
    return ml.lab.netns_exec(via, ["swaks", "--server", server, "--port", "25", "--timeout", "20", *args],
                             check=False, timeout=timeout)


def delivered(ml: MailLab, marker: str, seconds: float = 90) -> email.message.EmailMessage:
    """The message with `marker` in its subject, once the outside receiver has delivered it."""
    mbox = ml.lab.root_dir("ext") / f"var/mail/{JUDGE}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if mbox.exists():
            for raw in re.split(rb"^From \S+ .*\n", mbox.read_bytes(), flags=re.M):
                if marker.encode() in raw:
                    return email.message_from_bytes(raw, policy=email.policy.default)
        time.sleep(1)
    log = ml.lab.run("lists", ["tail", "-n", "40", rmail.MAIL_LOG], check=False).stdout
    ext = ml.lab.run("ext", ["tail", "-n", "40", "/var/log/mail.log"], check=False).stdout
    raise AssertionError(f"{marker}: not delivered within {seconds} s\nlists:\n{log}\next:\n{ext}")


def symbols(msg) -> set[str]:
    """rspamd's verdict: the symbol names in X-Spamd-Result."""
    result = " ".join(str(v) for v in msg.get_all("X-Spamd-Result") or [])
    assert result, f"no X-Spamd-Result header in {list(msg.keys())}"
    return set(re.findall(r"\b([A-Z][A-Z0-9_]+)\(", result))


def judged(ml: MailLab, msg, *want: str) -> None:
    verdict = symbols(msg)
    log = ml.lab.run("ext", ["tail", "-n", "30", "/var/log/rspamd/rspamd.log"], check=False).stdout
    assert set(want) <= verdict, f"{sorted(verdict)}\nrspamd:\n{log}"


def _message(sender: str, to: str, marker: str) -> str:
    return (f"From: {sender}\nTo: {to}\nSubject: {marker}\nMessage-ID: <{marker}@{DOMAIN}>\n"
            f"Date: {email.utils.formatdate()}\n\nHello from the lab ({marker}).\n")


# --- converge ------------------------------------------------------------------------------------


def test_every_host_converged_and_the_mail_host_got_its_acme_certificate(ml):
    for host, result in ml.first.items():
        assert result.ok, f"{host}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert "certificate for mail.hypha.coop obtained" in ml.first["lists"].stdout
    print(f"mail lab wall time to converged: {ml.seconds:.1f} s")


def test_opendkim_testkey_finds_the_published_key_matching_the_signing_key(ml):
    # OpenDKIM resolves through libunbound from the root servers unless told a forwarder; the lab has
    # no internet, so the test names the stack's name server (signing itself looks nothing up).
    # Written from inside: the host's /run is its own tmpfs (and opendkim refuses world-writable /tmp).
    ml.lab.run("lists", ["sh", "-c", "cat >/run/testkey.conf"], input=f"Nameservers {ml.stack.hosts['dns'].lan_ip}\n")
    out = ml.lab.run("lists", ["opendkim-testkey", "-x", "/run/testkey.conf", "-d", DOMAIN, "-s", SELECTOR,
                               "-k", rmail.key_path(SELECTOR), "-vvv"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "key OK" in out.stdout + out.stderr or "key not secure" in out.stdout + out.stderr


# --- outbound: signed, and judged as a large provider would -------------------------------------------


def test_a_list_server_message_is_judged_dkim_spf_and_dmarc_allow(ml):
    marker = f"list-{time.time_ns()}"
    to = f"{JUDGE}@[{ml.front('ext')}]"
    ml.lab.run("lists", ["/usr/sbin/sendmail", "-f", f"lists@{DOMAIN}", "-t"], input=_message(f"lists@{DOMAIN}", to, marker))
    msg = delivered(ml, marker)
    assert f"d={DOMAIN}" in str(msg["DKIM-Signature"]) and f"s={SELECTOR}" in str(msg["DKIM-Signature"])
    judged(ml, msg, "R_DKIM_ALLOW", "R_SPF_ALLOW", "DMARC_POLICY_ALLOW")


def test_a_null_clients_mail_is_relayed_by_the_mail_host_signed_and_allowed(ml):
    marker = f"cron-{time.time_ns()}"
    to = f"{JUDGE}@[{ml.front('ext')}]"
    ml.lab.run("dns", ["/usr/sbin/sendmail", "-t"], input=_message(f"root@{DOMAIN}", to, marker))
    msg = delivered(ml, marker)
    received = " ".join(str(h) for h in msg.get_all("Received"))
    assert str(ml.stack.hosts["dns"].lan_ip) in received  # it went through the mail host
    judged(ml, msg, "R_DKIM_ALLOW", "R_SPF_ALLOW", "DMARC_POLICY_ALLOW")


def test_a_message_forged_from_outside_is_judged_dmarc_quarantine(ml):
    marker = f"forged-{time.time_ns()}"
    # From the root namespace ("the internet"): rspamd sees an address outside the SPF record, no signature.
    out = subprocess.run(["swaks", "--server", ml.front("ext"), "--port", "25", "--timeout", "20", "--to", f"{JUDGE}@[{ml.front('ext')}]",
                          "--from", f"ceo@{DOMAIN}", "--header", f"Subject: {marker}", "--header", f"From: ceo@{DOMAIN}",
                          "--ehlo", "forger.example"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    judged(ml, delivered(ml, marker), "DMARC_POLICY_QUARANTINE", "R_SPF_FAIL")


def test_forwarded_mail_leaves_with_an_srs_sender_at_our_domain_and_ours_keeps_its_own(ml):
    """postsrsd as Postfix asks it (sender_canonical_maps): an outside sender becomes an SRS address
    at the domain, so the final receiver's SPF check is of our own record; the domain's senders stay."""
    def ask(address: str) -> str:
        table = f"tcp:127.0.0.1:{rmail.SRS_FORWARD_PORT}"
        return ml.lab.run("lists", ["postmap", "-q", address, table], check=False).stdout.strip()

    forwarded = ask("alice@outside.example")
    assert re.fullmatch(rf"SRS0=[^=]+=[^=]+=outside\.example=alice@{re.escape(DOMAIN)}", forwarded), forwarded
    assert ask(f"lists@{DOMAIN}") == f"lists@{DOMAIN}"  # the domain's own senders are kept
    back = ml.lab.run("lists", ["postmap", "-q", forwarded, f"tcp:127.0.0.1:{rmail.SRS_REVERSE_PORT}"]).stdout.strip()
    assert back == "alice@outside.example"


# --- inbound: only our addresses, never a relay -------------------------------------------------------


def test_the_mx_is_no_open_relay_for_outside_senders(ml):
    out = swaks(ml, "ext", ml.front("lists"), "--to", "victim@third.example", "--from", "spammer@outside.example",
                "--quit-after", "RCPT")
    assert re.search(r"<\*\* 554 5\.7\.1 .*Relay access denied", out.stdout), out.stdout


def test_an_undeclared_local_address_is_refused_at_rcpt_and_a_declared_one_accepted(ml):
    out = swaks(ml, "ext", ml.front("lists"), "--to", f"nobody@{DOMAIN}", "--from", "someone@outside.example",
                "--quit-after", "RCPT")
    assert re.search(r"<\*\* 550 5\.1\.1 .*nobody@hypha\.coop", out.stdout), out.stdout
    for local in ("postmaster", "abuse", "board", "dmarc-reports"):
        out = swaks(ml, "ext", ml.front("lists"), "--to", f"{local}@{DOMAIN}", "--from", "someone@outside.example",
                    "--quit-after", "RCPT")
        assert re.search(r"<-  250 2\.1\.5 Ok", out.stdout), (local, out.stdout)


def test_starttls_on_port_25_offers_the_acme_certificate_of_the_mx_name(ml):
    out_file = ml.tmp / "testssl-smtp.json"
    proc = subprocess.run(
        ["testssl", "--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none", "--ip", ml.front("lists"),
         "--connect-timeout", "5", "--openssl-timeout", "5", "--starttls", "smtp", "-S", "-p", "--jsonfile", str(out_file),
         f"mail.{DOMAIN}:25"],
        capture_output=True, text=True, timeout=300, cwd=ml.tmp,
    )
    assert out_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    by_id = {f["id"]: f["finding"] for f in json.loads(out_file.read_text())}
    assert by_id["cert_commonName"] == f"mail.{DOMAIN}", by_id.get("cert_commonName")
    assert "Pebble" in by_id["cert_caIssuers"], by_id["cert_caIssuers"]
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[old].startswith("not offered"), (old, by_id[old])
    # And the chain verifies up to pebble's root, for the MX name.
    (ml.tmp / "pebble-root.pem").write_text(ml.pebble_root)
    verify = subprocess.run(["openssl", "s_client", "-connect", f"{ml.front('lists')}:25", "-starttls", "smtp",
                             "-servername", f"mail.{DOMAIN}", "-verify_hostname", f"mail.{DOMAIN}",
                             "-CAfile", str(ml.tmp / "pebble-root.pem"), "-verify_return_error"],
                            input="QUIT\n", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in verify.stdout, verify.stdout[-2000:]


# --- the DMARC loop ----------------------------------------------------------------------------------


def _report(rows, report_id: str) -> bytes:
    records = "".join(
        f"<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated><disposition>{d}</disposition>"
        f"<dkim>{dk}</dkim><spf>{sp}</spf></policy_evaluated></row><identifiers><header_from>{DOMAIN}</header_from>"
        "</identifiers></record>"
        for ip, n, dk, sp, d in rows
    )
    xml = (f'<?xml version="1.0"?><feedback><report_metadata><org_name>outside.example</org_name>'
           f"<report_id>{report_id}</report_id></report_metadata><policy_published><domain>{DOMAIN}</domain>"
           f"<p>quarantine</p></policy_published>{records}</feedback>").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"outside.example!{DOMAIN}!1!2.xml", xml)
    return buf.getvalue()


def _node_metrics(ml: MailLab) -> str:
    lan = ml.stack.hosts["lists"].lan_ip
    return ml.lab.run("lists", ["curl", "-fsS", f"http://{lan}:9100/metrics"]).stdout


def test_a_dmarc_report_mailed_in_becomes_the_metric(ml):
    forger = "198.51.100.66"
    path = ml.tmp / "report.zip"
    path.write_bytes(_report([(ml.front("lists"), 4, "pass", "pass", "none"), (forger, 2, "fail", "fail", "quarantine")],
                             f"lab-{time.time_ns()}"))
    out = swaks(ml, "ext", ml.front("lists"), "--to", f"dmarc-reports@{DOMAIN}", "--from", "dmarc@outside.example",
                "--header", f"Subject: Report domain: {DOMAIN}", "--attach-type", "application/zip", "--attach", f"@{path}")
    assert re.search(r"<-  250 2\.0\.0 Ok: queued", out.stdout), out.stdout
    deadline = time.monotonic() + 60
    metrics = ""
    while time.monotonic() < deadline:
        metrics = _node_metrics(ml)
        if f'source="{forger}"' in metrics:
            break
        time.sleep(1)
    lines = [line for line in metrics.splitlines() if f'source="{forger}"' in line]
    assert any(line.startswith("hypha_dmarc_messages_total{") and 'dmarc="fail"' in line and line.endswith(" 2")
               for line in lines), [line for line in metrics.splitlines() if "dmarc" in line]
    assert any(line.startswith("hypha_dmarc_last_failure_timestamp_seconds{") for line in lines), lines


# --- idempotence and drift ---------------------------------------------------------------------------


def test_a_second_converge_of_the_mail_host_and_a_null_client_changes_nothing(ml):
    for host in ("lists", "dns"):
        again = ml.converge(host)
        assert again.ok, again.stdout + again.stderr
        assert "done: 0 file(s) changed, 0 removed" in again.stdout, again.stdout[-2000:]


def test_drift_covers_the_mail_files_and_finds_an_edited_one(ml):
    from ops import drift

    key = ml.ls.keys["deploy"].private_openssh
    clean = drift.check_host(ml.stack, "lists", key)
    assert clean.status == "clean", clean
    root = ml.lab.root_dir("lists")
    main_cf = root / "etc/postfix/main.cf"
    original = main_cf.read_text()
    try:
        main_cf.write_text(original.replace("permit_mynetworks, reject_unauth_destination", "permit"))
        report = drift.check_host(ml.stack, "lists", key)
        assert report.status == "drift" and any(f.path == rmail.MAIN_CF for f in report.findings), report
    finally:
        main_cf.write_text(original)


def test_a_failing_report_fires_the_dmarc_alert_in_prometheus(ml):
    """The rule as the monitoring host loads it (render/roles/mail.py's group), evaluated by a real
    Prometheus scraping the mail host's node_exporter: started in the mail host's network namespace,
    from where its firewall lets the scrape in (the lab has no monitoring host)."""
    forger = "198.51.100.77"
    lan = ml.stack.hosts["lists"].lan_ip
    d = ml.tmp / "prometheus"
    d.mkdir(exist_ok=True)
    # Its `for: 1m` shortened as `monitoring.alert_waits: {DmarcFailures: 5s}` would write it.
    (d / "mail.rules.yml").write_text(mr.with_waits("groups:" + rmail.rule_groups(ml.stack), {"DmarcFailures": "5s"}))
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [mail.rules.yml]\n"
        f"scrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['{lan}:9100'], labels: {{host: lists}}}}]\n"
    )
    check = subprocess.run(["promtool", "check", "config", str(d / "prometheus.yml")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    port = 19090
    log = open(d / "prometheus.log", "wb")
    prom = subprocess.Popen(
        ["ip", "netns", "exec", ml.lab.netns("lists"), "prometheus", f"--config.file={d / 'prometheus.yml'}",
         f"--storage.tsdb.path={d / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        path = ml.tmp / "failing.zip"
        path.write_bytes(_report([(forger, 5, "fail", "fail", "quarantine")], f"alert-{time.time_ns()}"))
        out = swaks(ml, "ext", ml.front("lists"), "--to", f"dmarc-reports@{DOMAIN}", "--from", "dmarc@outside.example",
                    "--attach-type", "application/zip", "--attach", f"@{path}")
        assert re.search(r"<-  250 2\.0\.0 Ok: queued", out.stdout), out.stdout
        query = f'ALERTS{{alertname="DmarcFailures",alertstate="firing",source="{forger}"}}'
        url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
        deadline = time.monotonic() + 150  # the rule's wait, scrapes and a loaded machine
        result = []
        while time.monotonic() < deadline and not result:
            got = ml.lab.netns_exec("lists", ["curl", "-fsS", url], check=False)
            if got.returncode == 0:
                result = json.loads(got.stdout)["data"]["result"]
            time.sleep(2)
        assert result, (d / "prometheus.log").read_text()[-2000:]
        assert result[0]["metric"]["reporter"] == "outside.example" and result[0]["metric"]["domain"] == DOMAIN
    finally:
        stop_process(prom)
        log.close()
