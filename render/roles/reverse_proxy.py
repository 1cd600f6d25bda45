"""The reverse proxy role: nginx in front of every public service, TLS from ACME, the link shortener.

Decisions: Mozilla "intermediate" TLS (TLS 1.2 and 1.3; the RFC 7919 ffdhe2048 group for the DHE
suites), one certificate per service covering its domains, `www.` names redirected to their apex,
port 80 only for ACME http-01 and the redirect to HTTPS, and a handshake refused for unknown names.
Certificates live behind symlinks in /etc/nginx/tls/<service>/: a self-signed placeholder until
certbot has one, so nginx starts (and answers challenges) before any certificate exists.
A retired service (model/retire.py) keeps its certificate and names, answered with its redirect
(301) or 410 on 443 and on 80 alike (its own port-80 server, so the shared one leaves its names out).
"""

from __future__ import annotations

from pathlib import Path

from model import retire
from model.stack import Stack

from .. import shortlinks
from ..plan import HostPlan, ManagedFile, Role
from ..quote import Shell, sh, sh_join
from ..templates import TEMPLATES, render

TLS_DIR = "/etc/nginx/tls"
WEBROOT = "/var/www/acme"
STATIC_ROOT = "/var/www"
SITE_PREFIX = "/etc/nginx/sites-enabled/hypha-"
DEBIAN_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
PACKAGES = ["nginx", "certbot", "openssl"]
UNIT = "nginx"
RENEW_UNIT = "certbot.timer"
DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/hypha-nginx"


def proxied_services(stack: Stack) -> dict:
    """Public services, by name: what this proxy terminates TLS for."""
    return {n: s for n, s in sorted(stack.services.items()) if s.public and s.domains}


def served_names(stack: Stack) -> list[str]:
    """Every name a site here answers for (canonical names and the aliases it redirects)."""
    return sorted({d for s in proxied_services(stack).values() for d in s.domains})


def site(stack: Stack, name: str) -> str:
    svc = stack.services[name]
    if svc.retired is not None:
        return retired_site(stack, name)
    canonical = svc.domains[0]
    # `www.x` redirects to `x` when both are the service's; other extra names are served alike.
    aliases = [d for d in svc.domains[1:] if d == f"www.{canonical}" or canonical == f"www.{d}"]
    if canonical.startswith("www.") and canonical[4:] in svc.domains:
        canonical, aliases = canonical[4:], [canonical]
    names = [d for d in svc.domains if d not in aliases and d != canonical]
    kind = "shortlinks" if svc.shortlinks else "proxy" if svc.port else "static"
    return render(
        "reverse_proxy/site.conf.j2",
        service=name,
        kind=kind,
        canonical=" ".join([canonical, *names]),
        aliases=aliases,
        cert_dir=f"{TLS_DIR}/{name}",
        upstream=f"{stack.hosts[svc.host].lan_ip}:{svc.port}" if svc.port else "",
        static_root=f"{STATIC_ROOT}/{name}",
        shortlinks_location=shortlinks.LOCATION_FILE,
    )


def retired_site(stack: Stack, name: str) -> str:
    """A retired service's names: its redirect (301) or 410 Gone, on 443 and on 80 alike (model/retire.py)."""
    svc = stack.services[name]
    r = svc.retired
    return render(
        "reverse_proxy/retired.conf.j2",
        service=name,
        date=r.date.isoformat(),
        answer=f"{r.status} to {r.redirect}" if r.redirect else f"{r.status} Gone",
        names=list(svc.domains),
        cert_dir=f"{TLS_DIR}/{name}",
        webroot=WEBROOT,
        status=r.status,
        redirect=r.redirect or "",
        gone_text=f"{svc.domains[0]} was retired on {r.date.isoformat()} and is gone.",
    )


def live_names(stack: Stack) -> list[str]:
    """The names of served services that are not retired: port 80 sends these on to HTTPS."""
    return sorted({d for s in proxied_services(stack).values() if s.retired is None for d in s.domains})


def proxy_files(stack: Stack) -> list:
    """The files the reverse_proxy role adds to a host plan (render.plan.ManagedFile)."""
    nginx = dict(unit=UNIT, check="nginx")
    files = [
        ManagedFile("/etc/nginx/nginx.conf", render("reverse_proxy/nginx.conf.j2"), **nginx),
        ManagedFile("/etc/nginx/conf.d/hypha.conf", render("reverse_proxy/http.conf.j2"), **nginx),
        ManagedFile("/etc/nginx/snippets/hypha-tls.conf", render("reverse_proxy/tls.conf.j2"), **nginx),
        ManagedFile("/etc/nginx/snippets/hypha-headers.conf", render("reverse_proxy/headers.conf.j2"), **nginx),
        ManagedFile("/etc/nginx/snippets/hypha-proxy.conf", render("reverse_proxy/proxy.conf.j2"), **nginx),
        ManagedFile("/etc/nginx/ffdhe2048.pem", (TEMPLATES / "reverse_proxy/ffdhe2048.pem").read_text(), **nginx),
        ManagedFile(f"{SITE_PREFIX}acme.conf", render("reverse_proxy/acme.conf.j2", webroot=WEBROOT, names=live_names(stack)), **nginx),
    ]
    services = proxied_services(stack)
    short = [n for n, s in services.items() if s.shortlinks]
    if short:
        host = stack.services[short[0]].domains[0]
        links = shortlinks.load(shortlinks.CSV_PATH, shortener_host=host)
        gone = {d: (n, s.retired) for d, n in retire.retired_domains(stack.services).items() for s in [stack.services[n]]}
        shortlinks.check_retired(links, gone)
        files += [
            ManagedFile(shortlinks.MAP_FILE, shortlinks.render_map(links), **nginx),
            ManagedFile(shortlinks.LOCATION_FILE, shortlinks.render_location(host), **nginx),
        ]
    files += [ManagedFile(f"{SITE_PREFIX}{n}.conf", site(stack, n), **nginx) for n in services]
    files.append(
        ManagedFile(DEPLOY_HOOK, render("reverse_proxy/certbot-deploy-hook.j2", tls_dir=TLS_DIR), mode="0755", check="shell")
    )
    if stack.tls is not None and stack.tls.ca_bundle:
        files += [
            ManagedFile(ACME_CA_BUNDLE, stack.tls.ca_bundle),
            # Without it the renewals from certbot.timer fail verifying the private CA's HTTPS.
            ManagedFile(RENEW_CA_DROPIN, render("reverse_proxy/certbot-ca.conf.j2", ca_bundle=ACME_CA_BUNDLE)),
        ]
    return files


ACME_CA_BUNDLE = "/etc/hypha-infra/acme-ca.pem"
RENEW_CA_DROPIN = "/etc/systemd/system/certbot.service.d/hypha-acme-ca.conf"


def placeholder_step(stack: Stack) -> Shell:
    """Shell: a self-signed certificate behind each service's symlinks until certbot has one."""
    lines = []
    for name, domains in certificates(stack).items():
        d = f"{TLS_DIR}/{name}"
        san = ",".join(f"DNS:{x}" for x in domains)
        lines.append(
            f"if [ ! -e {sh(d + '/fullchain.pem')} ]; then mkdir -p {sh(d)} && "
            f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
            f"-subj {sh('/CN=' + domains[0])} -addext {sh('subjectAltName=' + san)} "
            f"-keyout {sh(d + '/placeholder-key.pem')} -out {sh(d + '/placeholder.pem')} 2>/dev/null && "
            f"ln -sfn placeholder.pem {sh(d + '/fullchain.pem')} && ln -sfn placeholder-key.pem {sh(d + '/privkey.pem')} && "
            f"log {sh(f'placeholder certificate for {name}')}; fi"
        )
    return Shell("\n".join(lines))


def certbot_step(stack: Stack) -> Shell:
    """Shell: ask the ACME CA for each certificate nginx does not have yet (renewals: certbot.timer)."""
    tls = stack.tls
    if tls is None:
        return Shell("")
    env = f"REQUESTS_CA_BUNDLE={sh(ACME_CA_BUNDLE)} " if tls.ca_bundle else ""
    lines = [f"mkdir -p {sh(WEBROOT)}"]
    for name, domains in certificates(stack).items():
        names = sh_join(w for x in domains for w in ("-d", x))
        lines.append(
            f'case "$(readlink {sh(f"{TLS_DIR}/{name}/fullchain.pem")})" in /etc/letsencrypt/live/*) ;; *)\n'
            f"\tif {env}certbot certonly --non-interactive --agree-tos --email {sh(tls.email)} "
            f"--server {sh(tls.acme_directory)} --webroot -w {sh(WEBROOT)} --cert-name {sh(name)} {names} "
            f"--deploy-hook {sh(DEPLOY_HOOK)} >>\"$STATE/certbot.log\" 2>&1; then\n"
            f"\t\tlog {sh(f'certificate for {name} obtained')}\n"
            f"\telse\n"
            f'\t\tcert_failed="$cert_failed "{sh(name)}\n'
            f"\tfi\n"
            f"\t;;\nesac"
        )
    return Shell("\n".join(lines))


def certificates(stack: Stack) -> dict[str, list[str]]:
    """Certificate name (the service) to the names it covers."""
    return {n: list(s.domains) for n, s in proxied_services(stack).items()}


NAME = "reverse_proxy"


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """nginx with TLS for the public services and the shortlinks, certificates from the ACME CA."""
    plan.files += proxy_files(stack)
    plan.packages += PACKAGES
    plan.units += [UNIT, RENEW_UNIT]
    plan.absent.append((DEBIAN_DEFAULT_SITE, UNIT))
    plan.prepare.append(placeholder_step(stack))
    plan.finish.append(certbot_step(stack))


ROLE = Role(NAME, contribute, bare_units=("nginx.service", "certbot.timer"), packages=tuple(PACKAGES))
