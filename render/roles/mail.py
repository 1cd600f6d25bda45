"""The mail role: Postfix (MX and the stack's one sender), OpenDKIM signing, SRS, the DMARC report
sink; and `CLIENT`, the Postfix null client every other host relays its own mail through.

Decisions:
- The mail host is the only host that talks SMTP to the world. Every other host runs a null client
  (loopback only, no local delivery) relaying to the mail host's LAN address; the mail host relays
  for the stack's LAN (`mynetworks`) and for nobody else, and accepts mail from outside only for
  the addresses model/mail.py lists, refusing the rest at RCPT time (no backscatter).
- Recipients are a `local_recipient_maps` table, not system accounts: root@, deploy@ and the
  like do not exist from outside. Forwarding is aliases(5) expansion; postsrsd rewrites the
  envelope sender of forwarded mail (SRS) so it still passes SPF at the final receiver.
- OpenDKIM signs everything from the LAN and the host itself (mode `s`, the domain's mail only);
  `milter_default_action = tempfail`: while it is down mail waits, it never leaves unsigned.
- The STARTTLS certificate is the ACME certificate of the MX name, obtained by certbot on the mail
  host itself (http-01, `--standalone`, so port 80 is open on this host too): the MX name must
  point at the mail host, so the reverse proxy cannot answer its challenge. Until certbot has one a
  self-signed placeholder sits behind the same symlinks, so Postfix offers STARTTLS from the start.
- chroot off in master.cf: Debian chroots most services and copies /etc files in at start; the
  copies are one more thing that drifts (resolv.conf, the maps), and the daemons run unprivileged.
"""

from __future__ import annotations

from typing import Optional

from model import derive_mail as mail_model
from model import mail as mail_section
from model.derive_dns import mx_name
from model.mail import Mail
from model.stack import Stack

from .. import metrics
from ..plan import HostPlan, LateValue, ManagedFile, Probe, Record, Role, Scrape, late
from ..quote import Shell, postfix_word, sh
from ..templates import TEMPLATES, render
from . import dns
from .reverse_proxy import ACME_CA_BUNDLE

NAME = "mail"
PACKAGES = ["postfix", "opendkim", "opendkim-tools", "postsrsd", "certbot", "openssl", "prometheus-postfix-exporter"]
CLIENT_PACKAGES = ["postfix"]
UNIT = "postfix"
OPENDKIM_UNIT = "opendkim"
SRS_UNIT = "postsrsd"
RENEW_UNIT = "certbot.timer"

MAIN_CF = "/etc/postfix/main.cf"
MASTER_CF = "/etc/postfix/master.cf"
MAP_DIR = "/etc/postfix/hypha"
ALIASES = f"{MAP_DIR}/aliases"
RECIPIENTS = f"{MAP_DIR}/recipients"
TRANSPORT = f"{MAP_DIR}/transport"
TLS_DIR = "/etc/postfix/tls"
OPENDKIM_CONF = "/etc/opendkim.conf"
KEY_DIR = "/etc/opendkim/keys"
SRS_DEFAULT = "/etc/default/postsrsd"
DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/hypha-postfix"
DMARC_SCRIPT = "/usr/local/lib/hypha-infra/dmarc-report"
DMARC_USER = "hypha-dmarc"
DMARC_STATE = "/var/lib/hypha-dmarc"
DMARC_METRICS = "dmarc.prom"
CERT_NAME = "mail"

# The exporter reads Postfix's own log file (postlogd writes it: Debian 12 has no syslog daemon,
# and Debian's exporter build reads no journal) and the queue from showq.
MAIL_LOG = "/var/log/mail.log"
EXPORTER_UNIT = "prometheus-postfix-exporter"
EXPORTER_DEFAULT = "/etc/default/prometheus-postfix-exporter"
LOGROTATE = "/etc/logrotate.d/hypha-postfix"
# Metrics the rules read: the DMARC parser's (templates/mail/dmarc-report.py) and the exporter's.
DMARC_MESSAGES = "hypha_dmarc_messages_total"
DMARC_LAST_FAILURE = "hypha_dmarc_last_failure_timestamp_seconds"
QUEUE_SIZE = "postfix_showq_message_size_bytes_count"
DEFERRED = "postfix_smtp_deferred_messages_total"
DMARC_ALERT_WINDOW = 86400  # a failure report keeps the alert up for a day (reports arrive daily)
QUEUE_MAX = 50
DEFERRED_MAX = 20
SMTP_PROBE_MODULE = "smtp_starttls"

# Where the helpers listen on the mail host (loopback; model/roles.py keeps services off them).
OPENDKIM_PORT = mail_model.OPENDKIM_PORT
SRS_FORWARD_PORT = mail_model.SRS_FORWARD_PORT
SRS_REVERSE_PORT = mail_model.SRS_REVERSE_PORT
# The master.cf transport the DMARC report addresses are delivered to.
DMARC_TRANSPORT = "dmarc"

# Late values (components make them): the signing key of a selector, and its public half as the
# `p=` of its TXT record, already in zone-file syntax (quoted strings of at most 255 bytes).
LATE_KEY = "mail/dkim-key/{selector}"
LATE_RECORD = "mail/dkim-record/{selector}"  # in the zone's TXT record of the key (key_records)
KEY_BITS = 2048


def key_late(selector: str) -> str:
    return LATE_KEY.format(selector=selector)


def record_late(selector: str) -> str:
    return LATE_RECORD.format(selector=selector)


def key_path(selector: str) -> str:
    return f"{KEY_DIR}/{selector}.private"


def mail_name(stack: Stack) -> str:
    """The mail host's published name: the MX name it has in the zone, else `mail.<domain>`."""
    host = mail_model.mail_host(stack.hosts)
    domain = stack.site.domain
    for mx in stack.dns.mx if stack.dns else []:
        if mx.host == host:
            return mx_name(mx, domain)
    return f"mail.{domain}"


def is_mx(stack: Stack) -> bool:
    host = mail_model.mail_host(stack.hosts)
    return bool(stack.dns and any(mx.host == host for mx in stack.dns.mx))


def recipients(stack: Stack) -> dict[str, list[str]]:
    """Every local part the mail host accepts, to the addresses its mail goes to (empty: a report
    address, delivered to the DMARC parser)."""
    mail: Mail = stack.mail
    domain = stack.site.domain
    postmaster = mail_model.postmaster_addresses(mail, stack.access.admins, stack.people)
    out = {name: postmaster for name in mail_section.GENERATED}
    out.update({name: mail_model.resolve(t, stack.people) for name, t in mail.aliases.items()})
    out.update({name: [] for name in mail_model.report_local_parts(stack.dns, domain)})
    return dict(sorted(out.items()))


def _table(rows: list[tuple[str, str]], what: str) -> str:
    head = f"# Managed by hypha-infra; edits are overwritten. {what}\n"
    return head + "".join(f"{postfix_word(k)} {v}\n" for k, v in rows)


def mail_files(stack: Stack, host: str) -> list[ManagedFile]:
    h = stack.hosts[host]
    domain = stack.site.domain
    name = mail_name(stack)
    mail: Mail = stack.mail
    accepted = recipients(stack)
    postfix = dict(unit=UNIT, check="postfix")
    main_cf = render(
        "mail/main.cf.j2",
        myhostname=postfix_word(name),
        domain=postfix_word(domain),
        protocols="all" if h.public_ipv6 else "ipv4",
        mynetworks=" ".join(postfix_word(n) for n in ("127.0.0.0/8", "[::1]/128", str(stack.network.lan_cidr))),
        aliases=ALIASES,
        recipients=RECIPIENTS,
        transport=TRANSPORT,
        tls_dir=TLS_DIR,
        opendkim=f"inet:127.0.0.1:{OPENDKIM_PORT}",
        srs_forward=f"tcp:127.0.0.1:{SRS_FORWARD_PORT}",
        srs_reverse=f"tcp:127.0.0.1:{SRS_REVERSE_PORT}",
        dmarc_transport=DMARC_TRANSPORT,
        mail_log=MAIL_LOG,
    )
    aliases = _table(
        [(f"{local}:", ", ".join(postfix_word(a) for a in targets)) for local, targets in accepted.items() if targets],
        "Where each accepted address's mail goes (model/mail.py).",
    )
    reports = [local for local, targets in accepted.items() if not targets]
    files = [
        ManagedFile(MAIN_CF, main_cf, **postfix),
        ManagedFile(
            MASTER_CF,
            render("mail/master.cf.j2", dmarc_transport=DMARC_TRANSPORT, dmarc_user=DMARC_USER, dmarc_script=DMARC_SCRIPT,
                   dmarc_state=DMARC_STATE),
            **postfix,
        ),
        ManagedFile(ALIASES, aliases, unit=UNIT),
        ManagedFile(
            RECIPIENTS,
            _table([(f"{local}@{domain}", "OK") for local in accepted], "The only addresses accepted from outside; the rest is refused at RCPT."),
            unit=UNIT,
        ),
        ManagedFile(
            TRANSPORT,
            _table([(f"{local}@{domain}", f"{DMARC_TRANSPORT}:") for local in reports], "DMARC aggregate reports go to the parser."),
            unit=UNIT,
        ),
        ManagedFile(
            OPENDKIM_CONF,
            render(
                "mail/opendkim.conf.j2",
                domain=domain,
                selector=mail.dkim_selector,
                key_file=key_path(mail.dkim_selector),
                port=OPENDKIM_PORT,
                internal=["127.0.0.1", "::1", str(stack.network.lan_cidr)],
            ),
            unit=OPENDKIM_UNIT,
            action="restart",
            check="opendkim",
        ),
        ManagedFile(
            key_path(mail.dkim_selector), late(key_late(mail.dkim_selector)), mode="0600", owner="opendkim",
            group="opendkim", unit=OPENDKIM_UNIT, action="restart", check="private_key",
        ),
        ManagedFile(
            SRS_DEFAULT,
            render("mail/postsrsd.default.j2", domain=domain, forward=SRS_FORWARD_PORT, reverse=SRS_REVERSE_PORT),
            unit=SRS_UNIT,
            action="restart",
            check="shell",
        ),
        ManagedFile(
            EXPORTER_DEFAULT,
            render("mail/postfix-exporter.default.j2", listen=f"{h.lan_ip}:{mail_model.EXPORTER_PORT}", log=MAIL_LOG),
            unit=EXPORTER_UNIT, action="restart", check="shell",
        ),
        ManagedFile(LOGROTATE, render("mail/logrotate.j2", log=MAIL_LOG)),
        ManagedFile(DMARC_SCRIPT, (TEMPLATES / "mail/dmarc-report.py").read_text(), mode="0755", check="python"),
        ManagedFile(DEPLOY_HOOK, render("mail/certbot-deploy-hook.sh.j2", tls_dir=TLS_DIR, unit=UNIT, cert_name=CERT_NAME), mode="0755", check="shell"),
    ]
    return files


def placeholder_step(stack: Stack) -> Shell:
    """Shell: a self-signed certificate behind the TLS symlinks until certbot has the real one, and
    the DMARC parser's account and state (the pipe transport runs as that user)."""
    name = mail_name(stack)
    d = TLS_DIR
    return Shell(
        f"if [ ! -e {sh(d + '/fullchain.pem')} ]; then mkdir -p {sh(d)} && "
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
        f"-subj {sh('/CN=' + name)} -addext {sh('subjectAltName=DNS:' + name)} "
        f"-keyout {sh(d + '/placeholder-key.pem')} -out {sh(d + '/placeholder.pem')} 2>/dev/null && "
        f"ln -sfn placeholder.pem {sh(d + '/fullchain.pem')} && ln -sfn placeholder-key.pem {sh(d + '/privkey.pem')} && "
        f"log {sh('placeholder certificate for ' + name)}; fi\n"
        f"id -u {sh(DMARC_USER)} >/dev/null 2>&1 || useradd --system --home-dir {sh(DMARC_STATE)} --shell /usr/sbin/nologin {sh(DMARC_USER)}\n"
        f"install -d -o {sh(DMARC_USER)} -g {sh(DMARC_USER)} -m 0755 {sh(DMARC_STATE)}\n"
        f"[ -e {sh(DMARC_STATE + '/' + DMARC_METRICS)} ] || install -o {sh(DMARC_USER)} -g {sh(DMARC_USER)} -m 0644 /dev/null {sh(DMARC_STATE + '/' + DMARC_METRICS)}\n"
        f"ln -sfn {sh(DMARC_STATE + '/' + DMARC_METRICS)} {sh(metrics.TEXTFILE_DIR + '/' + DMARC_METRICS)}"
    )


def certbot_step(stack: Stack) -> Shell:
    """Shell: ask the ACME CA for the MX name's certificate once (renewals: certbot.timer), http-01
    answered by certbot itself on port 80 (nothing else listens there on the mail host)."""
    tls = stack.tls
    if tls is None or not is_mx(stack):
        return Shell("")
    env = f"REQUESTS_CA_BUNDLE={sh(ACME_CA_BUNDLE)} " if tls.ca_bundle else ""
    name = mail_name(stack)
    return Shell(
        f'case "$(readlink {sh(TLS_DIR + "/fullchain.pem")})" in /etc/letsencrypt/live/*) ;; *)\n'
        f"\tif {env}certbot certonly --non-interactive --agree-tos --email {sh(tls.email)} "
        f"--server {sh(tls.acme_directory)} --standalone --cert-name {sh(CERT_NAME)} -d {sh(name)} "
        f"--deploy-hook {sh(DEPLOY_HOOK)} >>\"$STATE/certbot.log\" 2>&1; then\n"
        f"\t\tlog {sh('certificate for ' + name + ' obtained')}\n"
        f"\telse\n"
        f'\t\tcert_failed="$cert_failed "{sh(CERT_NAME)}\n'
        f"\tfi\n"
        f"\t;;\nesac"
    )


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """Postfix as the domain's MX and sender, OpenDKIM, postsrsd and the DMARC report sink."""
    if stack.mail is None:
        return
    plan.files += mail_files(stack, host)
    if stack.tls is not None and stack.tls.ca_bundle:
        # The proxy's copy of the private ACME CA, when the mail host is not also the proxy.
        if not any(f.path == ACME_CA_BUNDLE for f in plan.files):
            plan.files.append(ManagedFile(ACME_CA_BUNDLE, stack.tls.ca_bundle))
    plan.packages += PACKAGES
    plan.units += [UNIT, OPENDKIM_UNIT, SRS_UNIT, RENEW_UNIT, EXPORTER_UNIT]
    plan.prepare.append(placeholder_step(stack))
    plan.finish.append(certbot_step(stack))


# --- what the monitoring host watches of it (render/roles/monitoring.py asks) ------------------------


def rule_groups(stack: Stack) -> str:
    """The mail alert group, as more items of the monitoring rules file's `groups:` list."""
    if relay_host(stack) is None:
        return ""
    return render(
        "mail/rules.yml.j2",
        domain=stack.site.domain,
        last_failure=DMARC_LAST_FAILURE,
        messages=DMARC_MESSAGES,
        window=DMARC_ALERT_WINDOW,
        queue=QUEUE_SIZE,
        queue_max=QUEUE_MAX,
        deferred=DEFERRED,
        deferred_max=DEFERRED_MAX,
    )


def scrapes(stack: Stack) -> list[Scrape]:
    """The exporter on the mail host's LAN address."""
    host = relay_host(stack)
    if host is None:
        return []
    return [Scrape("postfix", host, f"{stack.hosts[host].lan_ip}:{mail_model.EXPORTER_PORT}")]


def probes(stack: Stack) -> list[Probe]:
    """The STARTTLS probe of port 25 (its certificate's expiry feeds CertificateExpiringSoon)."""
    host = relay_host(stack)
    if host is None:
        return []
    return [Probe("probe_smtp", host, SMTP_PROBE_MODULE, f"{stack.hosts[host].lan_ip}:25", f"smtp://{mail_name(stack)}:25", "smtp")]


def blackbox_modules(stack: Stack, verify: bool) -> str:
    if not probes(stack):
        return ""
    return render("mail/blackbox.yml.j2", module=SMTP_PROBE_MODULE, server_name=mail_name(stack), verify=verify)


def key_records(stack: Stack) -> list[Record]:
    """A TXT record per selector the mail host publishes in the zone. The tags are written here and
    the key follows as more strings of the same record: read without its late value (policy/view.py)
    the record still parses, as a key being published."""
    if stack.dns is None or relay_host(stack) is None:
        return []
    return [
        Record(f"{sel}._domainkey.{dns.zone_name(stack)}", "TXT", f'"v=DKIM1; k=rsa; p=" {late(record_late(sel))}', stack.dns.ttl)
        for sel in mail_model.signing_selectors(stack.mail)
    ]


def relay_host(stack: Stack) -> Optional[str]:
    """The mail host, once the stack has a mail section: the null clients' relay, and the host whose
    exporter, probe and DKIM records the role publishes. None otherwise."""
    host = mail_model.mail_host(stack.hosts)
    return None if host is None or stack.mail is None else host


def contribute_client(stack: Stack, host: str, plan: HostPlan) -> None:
    """On every host but the mail host: a Postfix null client sending everything to the mail host."""
    relay = relay_host(stack)
    if relay is None or relay == host:
        return
    plan.files.append(
        ManagedFile(
            MAIN_CF,
            render(
                "mail/null-client.cf.j2",
                myhostname=postfix_word(f"{host}.{stack.site.domain}"),
                domain=postfix_word(stack.site.domain),
                relay=postfix_word(f"[{stack.hosts[relay].lan_ip}]:25"),
            ),
            unit=UNIT,
            check="postfix",
        )
    )
    plan.packages += CLIENT_PACKAGES
    plan.units.append(UNIT)


def dkim_record(_stack: Stack, public_key_pem: str) -> str:
    """The `p=` of a DKIM key record as zone-file strings: the base64 SubjectPublicKeyInfo (RFC 6376
    section 3.6.1), i.e. the PEM body without its armour, in strings of at most 255 bytes."""
    body = "".join(line for line in public_key_pem.strip().splitlines() if not line.startswith("-----"))
    return dns.txt_data(body)


# One RSA key per published selector (resource dkim-<selector>): a new selector makes a new key,
# dropping a retired one destroys its key.
_SELECTOR = "(?P<selector>[a-z0-9-]+)"
_LATE = (
    LateValue(LATE_KEY.format(selector=_SELECTOR), "rsa-keypair-private", resource="dkim-{selector}"),
    LateValue(LATE_RECORD.format(selector=_SELECTOR), "rsa-keypair-public", resource="dkim-{selector}", encode=dkim_record),
)
ROLE = Role(
    NAME, contribute, late=_LATE,
    bare_units=("postfix.service", "opendkim.service", "postsrsd.service", "certbot.timer", "prometheus-postfix-exporter.service"),
    packages=tuple(PACKAGES),
    zone_records=key_records, scrapes=scrapes, probes=probes, alert_rules=rule_groups, blackbox_modules=blackbox_modules,
)
CLIENT = Role("mail_client", contribute_client, bare_units=("postfix.service",), packages=tuple(CLIENT_PACKAGES))
