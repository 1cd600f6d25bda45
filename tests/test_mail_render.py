"""The mail role as rendered and as the program makes it: who may send and receive, the DKIM key and
its record, what the monitoring host watches, and config mistakes refused with their key paths.
The daemons' own checkers of these files: tests/test_mail_files.py."""

from __future__ import annotations

import copy
import re

import pytest

from model import derive
from model.errors import ConfigError
from model.load import build_stack, read_stack_config
from render.plan import LATE_MARK
from render.roles import dns as render_dns
from render.roles import host_plan
from render.roles import mail
from tests.program_runs import STACKS, model, run

pytestmark = pytest.mark.program

MAIL_HOST = "lists"


def files(stack: str, host: str) -> dict[str, str]:
    return {f.path: f.content for f in host_plan(model(stack), host).files}


def plan_file(stack: str, host: str, path: str):
    return next(f for f in host_plan(model(stack), host).files if f.path == path)


def main_cf(stack: str, host: str) -> dict[str, str]:
    out = {}
    for line in files(stack, host)[mail.MAIN_CF].splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# --- who may send and receive --------------------------------------------------------------------


def test_the_mail_host_accepts_only_declared_addresses_postmaster_abuse_root_and_the_report_address():
    table = files("prod", MAIL_HOST)[mail.RECIPIENTS]
    accepted = {line.split()[0] for line in table.splitlines() if not line.startswith("#")}
    declared = {f"{a}@hypha.coop" for a in read_stack_config("prod")["mail"]["aliases"]}
    assert accepted == declared | {"postmaster@hypha.coop", "abuse@hypha.coop", "root@hypha.coop", "dmarc-reports@hypha.coop"}
    cf = main_cf("prod", MAIL_HOST)
    assert cf["local_recipient_maps"] == f"texthash:{mail.RECIPIENTS}"  # unknown local parts: 550 at RCPT
    assert "deploy@hypha.coop" not in accepted and "alice@mail.hypha.coop" not in accepted


def test_aliases_forward_to_members_addresses_and_reports_go_to_the_parser():
    aliases = files("prod", MAIL_HOST)[mail.ALIASES]
    assert "infra: alice@hypha.coop, bob@hypha.coop\n" in aliases  # people by name: their email
    assert "alice: alice@example.net\n" in aliases
    assert "dmarc-reports" not in aliases
    assert files("prod", MAIL_HOST)[mail.TRANSPORT].splitlines()[-1] == "dmarc-reports@hypha.coop dmarc:"


@pytest.mark.parametrize("stack", STACKS)
def test_the_mail_host_relays_for_the_lan_only_and_signs_everything_it_sends(stack):
    cf = main_cf(stack, MAIL_HOST)
    lan = str(model(stack).network.lan_cidr)
    assert cf["mynetworks"].split() == ["127.0.0.0/8", "[::1]/128", lan]
    assert cf["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    assert cf["smtpd_milters"] == f"inet:127.0.0.1:{mail.OPENDKIM_PORT}" and cf["non_smtpd_milters"] == "$smtpd_milters"
    assert cf["milter_default_action"] == "tempfail"  # never unsigned
    assert cf["smtp_tls_security_level"] == "may" and cf["smtpd_tls_security_level"] == "may"
    assert cf["sender_canonical_maps"] == f"tcp:127.0.0.1:{mail.SRS_FORWARD_PORT}"
    dkim = files(stack, MAIL_HOST)[mail.OPENDKIM_CONF]
    assert re.search(rf"^InternalHosts\s+127.0.0.1,::1,{re.escape(lan)}$", dkim, re.M)


def test_the_mx_names_itself_by_its_published_name_and_gets_its_certificate_by_acme():
    assert main_cf("prod", MAIL_HOST)["myhostname"] == "mail.hypha.coop"
    finish = "\n".join(host_plan(model("prod"), MAIL_HOST).finish)
    assert "--standalone" in finish and "-d mail.hypha.coop" in finish
    # staging's mail host is no MX: it sends only, and asks no CA for a certificate.
    assert "certbot" not in "\n".join(host_plan(model("staging"), MAIL_HOST).finish)


@pytest.mark.parametrize("stack", STACKS)
def test_every_other_host_is_a_null_client_relaying_to_the_mail_hosts_lan_address(stack):
    m = model(stack)
    relay = f"[{m.hosts[MAIL_HOST].lan_ip}]:25"
    for host in m.hosts:
        if host == MAIL_HOST:
            continue
        cf = main_cf(stack, host)
        assert cf["relayhost"] == relay, host
        assert cf["inet_interfaces"] == "loopback-only" and cf["mydestination"] == "", host
        assert cf["myorigin"] == m.site.domain  # cron mail from root@<domain>: signed and aligned


@pytest.mark.parametrize("stack", STACKS)
def test_port_25_is_open_to_the_world_only_on_the_mail_host(stack):
    m = model(stack)
    for host in m.hosts:
        smtp = [r for r in derive.inbound_rules(m, host) if r.port == 25]
        if host == MAIL_HOST:
            assert [(r.proto, r.source) for r in smtp] == [("tcp", None)]
        else:
            assert smtp == [], host


# --- the DKIM key: generated, published ----------------------------------------------------------


def test_the_program_generates_one_rsa_2048_key_per_published_selector():
    keys = [r for r in run("prod").of_type("tls:index/privateKey:PrivateKey") if r.name.startswith("dkim-")]
    assert [(k.name, k.inputs["algorithm"], k.inputs["rsaBits"]) for k in keys] == [("dkim-mail2026", "RSA", 2048)]


def test_the_signing_key_reaches_the_host_only_as_a_late_value_readable_by_opendkim_alone():
    f = plan_file("prod", MAIL_HOST, mail.key_path("mail2026"))
    assert f.late == ["mail/dkim-key/mail2026"] and LATE_MARK.sub("", f.content) == ""
    assert (f.mode, f.owner, f.group) == ("0600", "opendkim", "opendkim")


def test_a_retired_selector_stays_published_and_does_not_sign():
    raw = read_stack_config("prod")
    raw["mail"]["dkim_selector"] = "mail2027"
    raw["mail"]["retired_selectors"] = ["mail2026"]
    m = build_stack(raw, "prod")
    body = next(f for f in host_plan(m, "dns").files if f.path == render_dns.body_path("hypha.coop"))
    assert body.late == ["mail/dkim-record/mail2026", "mail/dkim-record/mail2027"]
    dkim = next(f for f in host_plan(m, MAIL_HOST).files if f.path == mail.OPENDKIM_CONF).content
    assert re.search(r"^Selector\s+mail2027$", dkim, re.M) and "mail2026" not in dkim


# --- the config is refused with key paths ----------------------------------------------------------


def _refused(mutate) -> ConfigError:
    raw = copy.deepcopy(read_stack_config("prod"))
    mutate(raw)
    with pytest.raises(ConfigError) as caught:
        build_stack(raw, "prod")
    return caught.value


def _at(exc: ConfigError, path: str, *words: str) -> None:
    messages = [p.message for p in exc.problems if p.path == path]
    assert any(all(w in msg for w in words) for msg in messages), f"{path}: {words} not in {messages}; all: {exc}"


@pytest.mark.parametrize(
    "mutate,path,words",
    [
        (lambda r: r["mail"]["aliases"].update(board=["treasurer@"]), "mail.aliases.board[0]", ("not an email address",)),
        (lambda r: r["mail"]["aliases"].update(board=["ghost"]), "mail.aliases.board[0]", ("not an email address nor a person",)),
        (lambda r: r["mail"]["aliases"].update(board=["zed@hypha.coop"]), "mail.aliases.board[0]", ("accepts no zed@",)),
        (lambda r: r["mail"]["aliases"].update({"Board Room": ["a@example.org"]}), "mail.aliases.Board Room.[key]", ("not a local part",)),
        (lambda r: r["mail"]["aliases"].update(postmaster=["a@example.org"]), "mail.aliases.postmaster", ("routed by the program",)),
        (lambda r: r["mail"].update(dkim_selector="mail.2026"), "mail.dkim_selector", ("not a DNS label",)),
        (lambda r: r["mail"].update(dkim_selector="-mail"), "mail.dkim_selector", ("not a DNS label",)),
        (lambda r: r["mail"].update(retired_selectors=["mail2026"]), "mail.retired_selectors[0]", ("signing selector",)),
        (lambda r: r["hosts"]["lists"].pop("public_ipv4") and r["hosts"]["lists"].pop("public_ipv6"), "dns.mx[0].host", ("no public address",)),
        (lambda r: r.pop("mail"), "hosts.lists.roles", ("no `mail` section",)),
        (lambda r: r["hosts"]["loomio"]["roles"].append("mail"), "hosts", ("2 hosts have role `mail`",)),
    ],
    ids=["alias-bad-address", "alias-unknown-person", "alias-undeclared-own-address", "alias-bad-name",
         "alias-reserved", "selector-with-dot", "selector-leading-hyphen", "retired-is-signing",
         "mx-without-public-address", "role-without-section", "two-mail-hosts"],
)
def test_bad_mail_config_is_refused_with_its_key_path(mutate, path, words):
    _at(_refused(mutate), path, *words)


@pytest.mark.parametrize("stack", STACKS)
def test_the_converge_script_runs_the_mail_checkers(stack):
    from render.converge import converge_script

    script = converge_script(model(stack), MAIL_HOST)
    for name in ("postfix) check_postfix", "opendkim) check_opendkim", "private_key) openssl pkey"):
        assert name in script
    checks = {f.check for f in host_plan(model(stack), MAIL_HOST).files if f.path.startswith(("/etc/postfix/main", "/etc/postfix/master", "/etc/opendkim"))}
    assert checks == {"postfix", "opendkim", "private_key"}


# --- what the monitoring host watches of it --------------------------------------------------------


def test_the_monitoring_host_scrapes_the_postfix_exporter_and_probes_starttls_on_port_25():
    import yaml

    from model.derive_mail import EXPORTER_PORT
    from render.roles import monitoring as mr

    m = model("prod")
    lan = m.hosts[MAIL_HOST].lan_ip
    jobs = {j["job_name"]: j for j in mr.scrape_jobs(m, m.monitoring)}
    assert jobs["postfix"]["static_configs"][0]["targets"] == [f"{lan}:{EXPORTER_PORT}"]
    (probe,) = jobs["probe_smtp"]["static_configs"]
    assert probe["targets"] == [f"{lan}:25"] and probe["labels"]["module"] == mail.SMTP_PROBE_MODULE
    assert probe["labels"]["url"] == "smtp://mail.hypha.coop:25"
    module = yaml.safe_load(mr.blackbox_config(m, m.monitoring))["modules"][mail.SMTP_PROBE_MODULE]
    steps = module["tcp"]["query_response"]
    assert {"starttls": True} in steps and module["tcp"]["tls_config"]["server_name"] == "mail.hypha.coop"
    # Only the monitoring host may ask the exporter.
    rules = [r for r in derive.inbound_rules(m, MAIL_HOST) if r.port == EXPORTER_PORT]
    assert [r.source for r in rules] == [f"{m.hosts['monitor1'].lan_ip}/32"]
    exporter = files("prod", MAIL_HOST)[mail.EXPORTER_DEFAULT]
    assert f"--web.listen-address={lan}:{EXPORTER_PORT}" in exporter and f"--postfix.logfile_path={mail.MAIL_LOG}" in exporter
