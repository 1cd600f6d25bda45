"""What the site's names promise: every public service has DNS and TLS; the mail domain has SPF and DMARC,
and a DMARC policy that refuses mail only once the mail host signs.

Zones are read with dnspython from the files the dns hosts' converge scripts carry.
"""

from __future__ import annotations

import re

import dns.name
import dns.rdatatype
import dns.zone
from pulumi_policy import ReportViolation, StackValidationArgs

from policy.registry import stack_policy
from policy.view import HostView, hosts, stack_model, with_tag

# ---------------------------------------------------------------------------------------------------
# every public service has DNS and TLS; the mail domain has SPF and DMARC


def _zones(views: dict[str, HostView]):
    """Zones the dns hosts serve, parsed with dnspython: origin (no trailing dot) to Zone."""
    out = {}
    for view in with_tag(views, "dns"):
        for path, f in view.converge_files.items():
            if path.endswith(".zone"):
                try:
                    zone = dns.zone.from_text(f.content, relativize=False, check_origin=False)
                except Exception:  # noqa: BLE001 - an unreadable zone counts as no records
                    continue
                out[zone.origin.to_text(omit_final_dot=True)] = zone
    return out


def _records(zones, name: str, types: tuple[str, ...]) -> list[str]:
    fqdn = dns.name.from_text(name)
    for origin, zone in zones.items():
        if fqdn.is_subdomain(dns.name.from_text(origin)):
            node = zone.get_node(fqdn)
            if node is None:
                return []
            return [rd.to_text() for t in types for rds in [node.get_rdataset(1, dns.rdatatype.from_text(t))] if rds for rd in rds]
    return []


def _tls_served(views: dict[str, HostView], domain: str) -> bool:
    """A proxy answers `domain` on 443 with a certificate, and its converge asks the ACME CA for it."""
    for view in with_tag(views, "reverse_proxy"):
        if not re.search(rf"certbot certonly .*-d {re.escape(domain)}(\s|$)", view.script, re.M):
            continue
        for path, f in view.converge_files.items():
            if not path.startswith("/etc/nginx/"):
                continue
            for block in re.split(r"^\s*server\s*\{", f.content, flags=re.M)[1:]:
                names = re.search(r"^\s*server_name\s+([^;]*);", block, re.M)
                if (
                    names and domain in names.group(1).split()
                    and re.search(r"^\s*listen\s+\S*443\s+ssl", block, re.M)
                    and re.search(r"^\s*ssl_certificate\s", block, re.M)
                ):
                    return True
    return False


@stack_policy("public-services-dns-tls", "Every public service has DNS records and a TLS certificate.")
def public_services_dns_tls(args: StackValidationArgs, report: ReportViolation) -> None:
    stack = stack_model()
    views = hosts(args.resources)
    zones = _zones(views)
    for name, svc in sorted(stack.services.items()):
        if not svc.public:
            continue
        for domain in svc.domains:
            if not _records(zones, domain, ("A", "AAAA", "CNAME")):
                report(f"service {name}: {domain} has no A, AAAA or CNAME record in any zone a dns host serves")
            if not _tls_served(views, domain):
                report(f"service {name}: no reverse proxy serves {domain} on 443 with a certificate it asks the ACME CA for")


@stack_policy("mail-spf-dmarc", "The mail domain publishes SPF and DMARC.")
def mail_spf_dmarc(args: StackValidationArgs, report: ReportViolation) -> None:
    domain = stack_model().site.domain
    zones = _zones(hosts(args.resources))
    if not zones:
        report(f"{domain}: no dns host serves a zone, so neither SPF nor DMARC is published")
        return
    txt = [t.strip('"') for t in _records(zones, domain, ("TXT",))]
    spf = [t for t in txt if t.startswith("v=spf1")]
    if len(spf) != 1:
        report(f"{domain}: {len(spf)} SPF records (TXT v=spf1); exactly one is needed")
    elif not re.search(r"\s[-~]all$", spf[0]):
        report(f"{domain}: SPF `{spf[0]}` does not end in -all or ~all, so anyone may send as the domain")
    dmarc = [t.strip('"') for t in _records(zones, f"_dmarc.{domain}", ("TXT",)) if t.strip('"').startswith("v=DMARC1")]
    if len(dmarc) != 1:
        report(f"{domain}: {len(dmarc)} DMARC records (TXT v=DMARC1 at _dmarc.{domain}); exactly one is needed")
    elif not re.search(r";\s*p=(none|quarantine|reject)\s*(;|$)", dmarc[0]):
        report(f"{domain}: DMARC `{dmarc[0]}` has no valid p= policy")


def _signers(views: dict[str, HostView], domain: str, published: set[str]) -> list[str]:
    """Mail hosts whose OpenDKIM signs `domain` with a key the zone publishes and the converge ships."""
    out = []
    for view in with_tag(views, "mail"):
        for path, f in view.converge_files.items():
            if not path.endswith("/opendkim.conf"):
                continue
            setting = dict(re.findall(r"^(Domain|Selector|KeyFile)\s+(\S+)\s*$", f.content, re.M))
            if (setting.get("Domain") == domain and setting.get("Selector") in published
                    and setting.get("KeyFile") in view.converge_files):
                out.append(view.name)
    return out


@stack_policy(
    "dmarc-enforced-only-when-signed",
    "DMARC quarantine or reject only when a mail host signs the domain's mail (or the domain sends none).",
)
def dmarc_enforced_only_when_signed(args: StackValidationArgs, report: ReportViolation) -> None:
    """DMARC quarantine/reject only when the domain's own mail passes it: a mail host signs with a
    published key. A domain that sends no mail at all (SPF `v=spf1 -all`) may reject outright."""
    domain = stack_model().site.domain
    views = hosts(args.resources)
    zones = _zones(views)
    dmarc = [t.strip('"') for t in _records(zones, f"_dmarc.{domain}", ("TXT",)) if t.strip('"').startswith("v=DMARC1")]
    policy = re.search(r";\s*p=(quarantine|reject)\s*(;|$)", dmarc[0]) if len(dmarc) == 1 else None
    if policy is None:
        return  # none, or no valid record (mail-spf-dmarc reports that)
    spf = [t.strip('"') for t in _records(zones, domain, ("TXT",)) if t.strip('"').startswith("v=spf1")]
    if spf == ["v=spf1 -all"]:
        return
    published = set()
    for origin, zone in zones.items():
        for name, node in zone.nodes.items():
            text = name.to_text(omit_final_dot=True)
            if text.endswith(f"._domainkey.{domain}") and any(
                "".join(s.decode() for s in rd.strings).startswith("v=DKIM1") for rds in node.rdatasets for rd in rds
                if hasattr(rd, "strings")
            ):
                published.add(text.removesuffix(f"._domainkey.{domain}"))
    if not _signers(views, domain, published):
        report(
            f"{domain}: DMARC p={policy.group(1)} while no host with role mail signs the domain's mail with a key "
            "the zone publishes, so receivers would refuse its own mail; set dns.dmarc.policy: none until one does"
        )
