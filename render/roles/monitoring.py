"""The monitoring role: Prometheus, Alertmanager, blackbox_exporter and pve-exporter, targets from the catalog.

Decisions:
- Every target comes from the catalog: node_exporter on every host, Prometheus, Alertmanager and
  the exporters on the monitoring host, an HTTPS probe of every public service through the proxy,
  an HTTP probe of every other service with a port, a DNS probe of each name server. Each carries
  the labels `host`, `role` (the host's roles, comma-joined) and `stack`.
- Public services are probed at the proxy's LAN address with the service's name as Host and SNI:
  what members reach, without relying on hairpin NAT or on a resolver inside the LAN; the
  certificate's expiry comes from the same probe. The link shortener's "/" is its 404 help page,
  so that is what its probe expects; a UI behind the members' login must answer 401.
- The pve-exporter comes from PyPI (Debian has none): the converge makes a venv in
  /opt/prometheus-pve-exporter with the pinned release when it is missing or another release.
- `ui: proxy` puts both UIs behind a login (exporter-toolkit's web config, bcrypt users): members'
  hashes from the secret `monitoringUiPasswordHashes`, plus a `prometheus` user for Prometheus'
  own scrapes and alert pushes.
- Alertmanager, in both modes, sits behind an nginx on the monitoring host (the "guard",
  templates/monitoring/alertmanager-guard.conf.j2): exporter-toolkit's web config has logins but
  no rights, and Alertmanager lets anyone it lets in create silences and `/-/reload`. The guard
  asks for a login, lets every member read and only admins write, and passes requests on with
  the internal `prometheus` login, the only one Alertmanager (on loopback) accepts.
- Secrets stay out of Alertmanager's config, which it shows to every reader at `/api/v2/status`:
  the SMTP password in a file (`smtp_auth_password_file`), the chat room's webhook URL in the
  guard's relay (Debian 12's Alertmanager 0.25 has no webhook `url_file`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from typing import Optional

import bcrypt
import yaml

from model import derive
from model.stack import Stack
from model.monitoring import Monitoring
from model.derive_monitoring import (
    ALERTMANAGER_PORT,
    BLACKBOX_PORT,
    MTAIL_PORT,
    PROMETHEUS_PORT,
    PVE_EXPORTER_PORT,
    monitoring_host,
    ui_services,
)

from model import derive_backup as backup_model

from .. import gather, inventory, metrics
from ..plan import HostPlan, LateValue, ManagedFile, Role, late
from ..quote import Shell, sh
from ..templates import render
from . import backup

PACKAGES = ["prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"]
PROMETHEUS_UNIT = "prometheus"
ALERTMANAGER_UNIT = "prometheus-alertmanager"
BLACKBOX_UNIT = "prometheus-blackbox-exporter"
PVE_UNIT = "prometheus-pve-exporter"

CONFIG_DIR = "/etc/prometheus"
PROMETHEUS_CONFIG = f"{CONFIG_DIR}/prometheus.yml"
RULES_FILE = f"{CONFIG_DIR}/rules/hypha.rules.yml"
ALERTMANAGER_CONFIG = f"{CONFIG_DIR}/alertmanager.yml"
BLACKBOX_CONFIG = f"{CONFIG_DIR}/blackbox.yml"
WEB_CONFIG = f"{CONFIG_DIR}/web.yml"
SCRAPE_PASSWORD_FILE = f"{CONFIG_DIR}/scrape.password"
PVE_CONFIG = f"{CONFIG_DIR}/pve.yml"
PVE_UNIT_FILE = f"/etc/systemd/system/{PVE_UNIT}.service"
PVE_VENV = "/opt/prometheus-pve-exporter"
ALERTMANAGER_WEB_CONFIG = f"{CONFIG_DIR}/alertmanager-web.yml"
SMTP_PASSWORD_FILE = f"{CONFIG_DIR}/smtp.password"
# In conf.d, not sites-enabled: the proxy role names its sites hypha-<service>, and a service may be
# called alertmanager (prod's is) on a host that is proxy and monitoring at once.
GUARD_SITE = "/etc/nginx/conf.d/hypha-alertmanager-guard.conf"
GUARD_USERS = "/etc/nginx/hypha-alertmanager.users"
GUARD_UNIT = "nginx"
DEBIAN_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
# Alertmanager itself, behind the guard; the guard takes its LAN port.
ALERTMANAGER_LOOPBACK = f"127.0.0.1:{ALERTMANAGER_PORT}"
RELAY_LISTEN = "127.0.0.1:9095"
RELAY_PATH = "/hypha-webhook"
ALERTMANAGER_STORAGE = "/var/lib/prometheus/alertmanager"
SCRAPE_USER = "prometheus"

# Late values (render.plan.late) this role asks for; components/late.py makes them from LATE below.
LATE_SMTP_PASSWORD = "monitoring/smtp-password"
LATE_MATRIX_URL = "monitoring/matrix-url"
LATE_PVE_TOKEN = "monitoring/pve-token"
LATE_WEB_USERS = "monitoring/web-users"
LATE_SCRAPE_PASSWORD = "monitoring/scrape-password"
LATE_GUARD_USERS = "monitoring/guard-users"
LATE_INTERNAL_AUTH = "monitoring/internal-auth"
LATE_ALERTMANAGER_USERS = "monitoring/alertmanager-users"
# The Pulumi secrets (`pulumi config set --secret <key>`) behind them, each read only when the
# monitoring section needs it: SMTP login, Matrix webhook URL, pve-exporter token, UI logins.
SMTP_PASSWORD = "alertSmtpPassword"
MATRIX_WEBHOOK_URL = "alertMatrixWebhookUrl"
PVE_EXPORTER_TOKEN = "pveExporterToken"
UI_PASSWORD_HASHES = "monitoringUiPasswordHashes"

# Alert thresholds. Backups run daily: 26 h leaves two hours of slack before a missed run pages.
BACKUP_MAX_AGE_HOURS = 26
DRILL_MAX_AGE_HOURS = 26
CERT_MIN_DAYS = 14
CPU_BUSY_RATIO = 0.9
MEMORY_AVAILABLE_MIN_RATIO = 0.10
DISK_FREE_MIN_RATIO = 0.10
INODES_FREE_MIN_RATIO = 0.10
DISK_WRITE_BYTES_PER_S = 50 * 1024 * 1024
# Alerts that an instance being down makes pointless: its probes cannot succeed either.
PROBE_ALERTS = ("ProbeFailing", "CertificateExpiringSoon")


def yaml_scalar(value: str) -> str:
    """A string as a YAML scalar (JSON's quoting is valid YAML): how a late value goes into a YAML file."""
    return json.dumps(value)


def _labels(stack: Stack, host: str, **extra) -> dict:
    return {"host": host, "role": ",".join(sorted(stack.hosts[host].roles)) or "none", "stack": stack.site.stack, **extra}


def _node_labels(stack: Stack, host: str) -> dict:
    # A proxy's own `proxy` label lets its being down silence the probes behind it (alertmanager.yml).
    extra = {"proxy": host} if "reverse_proxy" in stack.hosts[host].roles else {}
    return _labels(stack, host, **extra)


def scrape_jobs(stack: Stack, mon: Monitoring) -> list[dict]:
    """Prometheus' scrape_configs, every target from the catalog."""
    host = monitoring_host(stack)
    lan = str(stack.hosts[host].lan_ip)
    auth = _scrape_auth(mon)
    jobs = [
        {
            "job_name": "node",
            "static_configs": [
                {"targets": [f"{h.lan_ip}:{derive.NODE_EXPORTER_PORT}"], "labels": _node_labels(stack, name)}
                for name, h in sorted(stack.hosts.items())
            ],
        },
        {"job_name": "prometheus", **auth, "static_configs": [{"targets": [f"{lan}:{PROMETHEUS_PORT}"], "labels": _labels(stack, host)}]},
        {"job_name": "alertmanager", **_internal_auth(), "static_configs": [{"targets": [f"{lan}:{ALERTMANAGER_PORT}"], "labels": _labels(stack, host)}]},
        {"job_name": "blackbox", "static_configs": [{"targets": [f"127.0.0.1:{BLACKBOX_PORT}"], "labels": _labels(stack, host)}]},
    ]
    proxies = derive.hosts_with_role(stack, "reverse_proxy")
    if proxies:
        # The proxies' request counts (render/access_metrics.py).
        jobs.append(
            {
                "job_name": "access_log",
                "static_configs": [
                    {"targets": [f"{stack.hosts[p].lan_ip}:{MTAIL_PORT}"], "labels": _node_labels(stack, p)} for p in proxies
                ],
            }
        )
    http = http_probes(stack, mon)
    if http:
        jobs.append(_probe_job("probe_http", http))
    dns = dns_probes(stack)
    if dns:
        jobs.append(_probe_job("probe_dns", dns))
    # What other roles publish (render/gather.py): the mail role's exporter and its STARTTLS probe.
    for s in gather.scrapes(stack):
        labels = _labels(stack, s.host, **dict(s.labels))
        jobs.append({"job_name": s.job, "static_configs": [{"targets": [s.target], "labels": labels}]})
    published: dict[str, list[dict]] = {}
    for p in gather.probes(stack):
        published.setdefault(p.job, []).append(
            {"module": p.module, "target": p.target, "url": p.url, "labels": _labels(stack, p.host, service=p.service)}
        )
    for job, probes in published.items():
        jobs.append(_probe_job(job, probes))
    if mon.pve_exporter is not None:
        api_host = stack.proxmox.endpoint.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        jobs.append(
            {
                "job_name": "pve",
                "metrics_path": "/pve",
                "params": {"target": [api_host], "cluster": ["1"], "node": ["1"]},
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{PVE_EXPORTER_PORT}"],
                        "labels": {"host": api_host, "role": "proxmox", "stack": stack.site.stack},
                    }
                ],
            }
        )
    return jobs


def _scrape_auth(mon: Monitoring) -> dict:
    if mon.ui != "proxy":
        return {}
    return _internal_auth()


def _internal_auth() -> dict:
    """Prometheus' login: to its own UI behind `ui: proxy`, and always to Alertmanager's guard."""
    return {"basic_auth": {"username": SCRAPE_USER, "password_file": SCRAPE_PASSWORD_FILE}}


def _probe_job(name: str, probes: list[dict]) -> dict:
    """One job for many probes: each target names its blackbox module and its human-readable URL."""
    return {
        "job_name": name,
        "metrics_path": "/probe",
        "static_configs": [
            {"targets": [p["target"]], "labels": {**p["labels"], "module": p["module"], "url": p["url"]}} for p in probes
        ],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["module"], "target_label": "__param_module"},
            {"source_labels": ["url"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": f"127.0.0.1:{BLACKBOX_PORT}"},
        ],
    }


def http_probes(stack: Stack, mon: Monitoring) -> list[dict]:
    """A probe per service: public ones over HTTPS through the proxy, others straight to their port."""
    proxies = derive.hosts_with_role(stack, "reverse_proxy")
    guarded = set(ui_services(stack).values()) if mon.ui == "proxy" else set()
    out = []
    for name, svc in sorted(stack.services.items()):
        # A retired service is not watched: its names answer a redirect or 410 by design, and
        # nothing of it runs to alert on (model/retire.py).
        if svc.retired is not None:
            continue
        if svc.public and proxies and svc.domains:
            proxy = proxies[0]
            # The name the proxy serves, not one it redirects: `www.x` listed first with `x` is sent to `x`.
            domain = svc.domains[0]
            if domain.startswith("www.") and domain[4:] in svc.domains:
                domain = domain[4:]
            out.append(
                {
                    "module": f"https_{name}",
                    "target": f"https://{stack.hosts[proxy].lan_ip}{svc.health_path}",
                    "url": f"https://{domain}{svc.health_path}",
                    "labels": _labels(stack, svc.host, service=name, proxy=proxy),
                    "domain": domain,
                    "expect": "401" if name in guarded else "404" if svc.shortlinks else "2xx",
                }
            )
        elif svc.port is not None and not svc.public:
            url = f"http://{stack.hosts[svc.host].lan_ip}:{svc.port}{svc.health_path}"
            out.append(
                {
                    "module": "http_2xx",
                    "target": url,
                    "url": url,
                    "labels": _labels(stack, svc.host, service=name),
                    "expect": "2xx",
                }
            )
    return out


def dns_probes(stack: Stack) -> list[dict]:
    """The zone's SOA asked of each name server host, when the stack has a zone."""
    if stack.dns is None:
        return []
    return [
        {
            "module": "dns_soa",
            "target": f"{stack.hosts[h].lan_ip}:53",
            "url": f"dns://{stack.hosts[h].lan_ip}/{stack.site.domain}",
            "labels": _labels(stack, h, service="dns"),
        }
        for h in derive.hosts_with_role(stack, "dns")
    ]


def external_url(stack: Stack, mon: Monitoring, ui: str) -> str:
    """Where members open a UI: its public name with `ui: proxy`, else the LAN address (over the VPN)."""
    if mon.ui == "proxy":
        svc = stack.services[ui_services(stack)[ui]]
        return f"https://{svc.domains[0]}/"
    port = PROMETHEUS_PORT if ui == "prometheus" else ALERTMANAGER_PORT
    return f"http://{stack.hosts[monitoring_host(stack)].lan_ip}:{port}/"


def prometheus_config(stack: Stack, mon: Monitoring) -> str:
    host = monitoring_host(stack)
    return render(
        "monitoring/prometheus.yml.j2",
        interval=mon.scrape_interval,
        rules=RULES_FILE,
        alertmanager=f"{stack.hosts[host].lan_ip}:{ALERTMANAGER_PORT}",
        alertmanager_auth=_internal_auth()["basic_auth"],
        jobs=_yaml_list(scrape_jobs(stack, mon), indent=2),
    )


class _NoAliases(yaml.SafeDumper):
    """Writes a repeated value out each time: `&id001`/`*id001` would puzzle the people reading the file."""

    def ignore_aliases(self, data) -> bool:
        return True


def _yaml_list(items: list, indent: int) -> str:
    """A YAML block list, indented to sit under a key; key order kept (byte-stable output)."""
    text = yaml.dump(items, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=1000)
    return "\n".join(" " * indent + line if line else line for line in text.rstrip("\n").split("\n"))


def rules(stack: Stack) -> str:
    """The alert rules: thresholds above; the backup clients (who must report) come from the catalog;
    the groups other roles publish follow (render/gather.py); `monitoring.alert_waits` replaces waits."""
    text = _hypha_rules(stack) + gather.alert_rules(stack)
    return with_waits(text, stack.monitoring.alert_waits) if stack.monitoring is not None else text


_ALERT_LINE = re.compile(r"\s*- alert: (\S+)")
_FOR_LINE = re.compile(r"(\s*)for: (\S+)")
_UNIT_WORDS = {"ms": "millisecond", "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "y": "year"}


def spoken(duration: str) -> str:
    """A Prometheus duration as a summary says it: `3m` is "3 minutes", `1h30m` "1 hour 30 minutes"."""
    parts = re.findall(r"(\d+)(ms|[ywdhms])", duration)
    return " ".join(f"{n} {_UNIT_WORDS[u]}{'' if n == '1' else 's'}" for n, u in parts)


def with_waits(text: str, waits: dict[str, str]) -> str:
    """The rules file with the `for:` of each alert named in `waits` set to its wait, and a summary
    that says how long ("for 3 minutes") saying the new wait, so the page does not tell a stale one.

    Every rule in the templates opens with `- alert:` and has one `for:` line before its summary; the
    waits are checked durations (model/types.py Duration: digits and unit letters), so they go in as
    they are."""
    out, alert, said = [], None, None
    for line in text.split("\n"):
        if m := _ALERT_LINE.fullmatch(line):
            alert, said = m.group(1), None
        elif (m := _FOR_LINE.fullmatch(line)) and alert in waits:
            said = (f"for {spoken(m.group(2))}", f"for {spoken(waits[alert])}")
            line = f"{m.group(1)}for: {waits[alert]}"
        elif said and line.lstrip().startswith("summary:"):
            line = re.sub(rf"{re.escape(said[0])}\b", said[1], line)
        out.append(line)
    return "\n".join(out)


def _hypha_rules(stack: Stack) -> str:
    return render(
        "monitoring/rules.yml.j2",
        m=metrics,
        clients=backup_model.clients(stack) if stack.backup is not None else [],
        client_unit=backup.CLIENT_UNIT,
        drill_unit=backup.target_unit("drill"),
        watch_unit=backup.target_unit("watch"),
        prune_unit=backup.target_unit("prune"),
        target_command=f"{backup.TARGET_TOOL} --config {backup.TARGET_CONFIG}",
        backup_max_age=BACKUP_MAX_AGE_HOURS * 3600,
        backup_hours=BACKUP_MAX_AGE_HOURS,
        drill_max_age=DRILL_MAX_AGE_HOURS * 3600,
        drill_hours=DRILL_MAX_AGE_HOURS,
        cert_min_seconds=CERT_MIN_DAYS * 86400,
        cert_days=CERT_MIN_DAYS,
        cpu=CPU_BUSY_RATIO,
        memory=MEMORY_AVAILABLE_MIN_RATIO,
        disk=DISK_FREE_MIN_RATIO,
        inodes=INODES_FREE_MIN_RATIO,
        writes=DISK_WRITE_BYTES_PER_S,
        writes_mib=DISK_WRITE_BYTES_PER_S // (1024 * 1024),
        full_days=inventory.BACKUP_FULL_WARN_DAYS,
    )


def alertmanager_config(stack: Stack, mon: Monitoring) -> str:
    email = mon.email
    # The chat room through the guard's relay, which holds its real URL (module docstring).
    matrix_url = yaml_scalar(f"http://{RELAY_LISTEN}{RELAY_PATH}") if mon.matrix is not None else None
    return render(
        "monitoring/alertmanager.yml.j2",
        mon=mon,
        email=email,
        smtp_password_file=yaml_scalar(SMTP_PASSWORD_FILE) if email and email.username else None,
        matrix_url=matrix_url,
        relay_auth=_internal_auth()["basic_auth"],
        probe_alerts="|".join(PROBE_ALERTS),
    )


def nginx_string(value: str, what: str) -> str:
    """A value as a double-quoted nginx string. nginx has no escape for `$` (it would expand a
    variable) and none this file needs for quotes or backslashes, so those are refused."""
    if any(c in value for c in '"\\$;{}') or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{what}: contains a quote, backslash, $, ;, brace, space or control character")
    return f'"{value}"'


def guard_site(stack: Stack, mon: Monitoring) -> str:
    """The nginx in front of Alertmanager, and the relay to the chat room (module docstring)."""
    host = monitoring_host(stack)
    relay = None
    if mon.matrix is not None:
        resolvers = " ".join(str(r) if r.version == 4 else f"[{r}]" for r in stack.network.resolvers)
        url = late(LATE_MATRIX_URL) if mon.matrix.url_secret else nginx_string(mon.matrix.url, "monitoring.matrix.url")
        relay = {"listen": RELAY_LISTEN, "path": RELAY_PATH, "resolvers": resolvers, "url": url}
    return render(
        "monitoring/alertmanager-guard.conf.j2",
        listen=f"{stack.hosts[host].lan_ip}:{ALERTMANAGER_PORT}",
        upstream=ALERTMANAGER_LOOPBACK,
        users_file=GUARD_USERS,
        pusher=SCRAPE_USER,
        admins=sorted(stack.access.admins),
        internal_auth=late(LATE_INTERNAL_AUTH),
        relay=relay,
    )


def blackbox_config(stack: Stack, mon: Monitoring) -> str:
    https = [p for p in http_probes(stack, mon) if p["module"].startswith("https_")]
    zone = stack.site.domain if stack.dns is not None else None
    modules = render("monitoring/blackbox.yml.j2", https=https, verify=mon.verify_certificates, zone=zone)
    return modules + gather.blackbox_modules(stack, mon.verify_certificates)


def prometheus_args(stack: Stack, mon: Monitoring) -> str:
    host = monitoring_host(stack)
    args = [
        f"--config.file={PROMETHEUS_CONFIG}",
        "--storage.tsdb.path=/var/lib/prometheus/metrics2/",
        f"--storage.tsdb.retention.time={mon.retention}",
        f"--web.listen-address={stack.hosts[host].lan_ip}:{PROMETHEUS_PORT}",
        f"--web.external-url={external_url(stack, mon, 'prometheus')}",
    ]
    if mon.ui == "proxy":
        args.append(f"--web.config.file={WEB_CONFIG}")
    return render("monitoring/default.j2", daemon="Prometheus", args=" ".join(args))


def alertmanager_args(stack: Stack, mon: Monitoring) -> str:
    host = monitoring_host(stack)
    args = [
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--storage.path={ALERTMANAGER_STORAGE}",
        # Behind the guard, which has the LAN address; loopback and the internal login only here.
        f"--web.listen-address={ALERTMANAGER_LOOPBACK}",
        f"--web.external-url={external_url(stack, mon, 'alertmanager')}",
        # One Alertmanager: no gossip port (9094) to open or to leave listening.
        "--cluster.listen-address=",
        f"--web.config.file={ALERTMANAGER_WEB_CONFIG}",
    ]
    return render("monitoring/default.j2", daemon="Alertmanager", args=" ".join(args))


def blackbox_args() -> str:
    args = f"--config.file={BLACKBOX_CONFIG} --web.listen-address=127.0.0.1:{BLACKBOX_PORT}"
    return render("monitoring/default.j2", daemon="blackbox_exporter", args=args)


def pve_install_step(mon: Monitoring) -> Shell:
    """Shell: the pinned pve-exporter in its venv, made only when missing or another release."""
    version = mon.pve_exporter.version
    marker = sh(f"{PVE_VENV}/hypha-release")
    venv = sh(PVE_VENV)
    return Shell(
        f'if [ "$(cat {marker} 2>/dev/null)" != {sh(version)} ] || [ ! -x {sh(PVE_VENV + "/bin/pve_exporter")} ]; then\n'
        f"\trm -rf {venv}\n"
        f"\tpython3 -m venv {venv}\n"
        f"\t{sh(PVE_VENV + '/bin/pip')} install -q --disable-pip-version-check {sh('prometheus-pve-exporter==' + str(version))}\n"
        # Written last: a run cut short before here builds the venv again.
        f"\techo {sh(version)} >{marker}\n"
        f"\techo {sh(f'restart {PVE_UNIT}')} >>\"$STAGE/units\"\n"
        f"\tlog {sh(f'installed prometheus-pve-exporter {version} in {PVE_VENV}')}\n"
        f"fi"
    )


def monitoring_files(stack: Stack, mon: Monitoring) -> list:
    """The files the monitoring role adds to its host (render.plan.ManagedFile)."""
    secret = dict(mode="0640", owner="root", group="prometheus")
    files = [
        ManagedFile(PROMETHEUS_CONFIG, prometheus_config(stack, mon), unit=PROMETHEUS_UNIT, check="promtool-config"),
        ManagedFile(RULES_FILE, rules(stack), unit=PROMETHEUS_UNIT, check="promtool-rules"),
        ManagedFile(
            "/etc/default/prometheus", prometheus_args(stack, mon), unit=PROMETHEUS_UNIT, action="restart", check="shell"
        ),
        ManagedFile(ALERTMANAGER_CONFIG, alertmanager_config(stack, mon), unit=ALERTMANAGER_UNIT, check="amtool", **secret),
        ManagedFile(
            "/etc/default/prometheus-alertmanager",
            alertmanager_args(stack, mon),
            unit=ALERTMANAGER_UNIT,
            action="restart",
            check="shell",
        ),
        ManagedFile(BLACKBOX_CONFIG, blackbox_config(stack, mon), unit=BLACKBOX_UNIT, check="blackbox"),
        ManagedFile(
            "/etc/default/prometheus-blackbox-exporter", blackbox_args(), unit=BLACKBOX_UNIT, action="restart", check="shell"
        ),
    ]
    if mon.ui == "proxy":
        files += [
            # Read on every request by both daemons: a changed login needs no restart.
            ManagedFile(WEB_CONFIG, render("monitoring/web.yml.j2", users=late(LATE_WEB_USERS)), check="promtool-web", **secret),
        ]
    guard = dict(unit=GUARD_UNIT, check="nginx", mode="0640", owner="root", group="www-data")
    files += [
        ManagedFile(SCRAPE_PASSWORD_FILE, late(LATE_SCRAPE_PASSWORD), unit=PROMETHEUS_UNIT, **secret),
        ManagedFile(
            ALERTMANAGER_WEB_CONFIG,
            render("monitoring/web.yml.j2", users=late(LATE_ALERTMANAGER_USERS)),
            check="promtool-web",
            **secret,
        ),
        ManagedFile(GUARD_USERS, late(LATE_GUARD_USERS), **guard),
        ManagedFile(GUARD_SITE, guard_site(stack, mon), **guard),
    ]
    if mon.email and mon.email.username:
        files.append(ManagedFile(SMTP_PASSWORD_FILE, late(LATE_SMTP_PASSWORD), unit=ALERTMANAGER_UNIT, **secret))
    if mon.pve_exporter is not None:
        pve = mon.pve_exporter
        files += [
            ManagedFile(
                PVE_CONFIG,
                render("monitoring/pve.yml.j2", pve=pve, token=late(LATE_PVE_TOKEN), verify=not stack.proxmox.insecure),
                unit=PVE_UNIT,
                action="restart",
                **secret,
            ),
            ManagedFile(
                PVE_UNIT_FILE,
                render("monitoring/pve-exporter.service.j2", venv=PVE_VENV, config=PVE_CONFIG, port=PVE_EXPORTER_PORT),
                unit=PVE_UNIT,
                action="restart",
            ),
        ]
    return files


def inventory_facts(stack: Stack, mon: Monitoring) -> inventory.FromMonitoring:
    """What the inventory page (render/inventory.py) takes from this role."""
    return inventory.FromMonitoring(
        probed=frozenset(p["labels"]["service"] for p in http_probes(stack, mon)),
        prometheus_url=f"http://{stack.hosts[monitoring_host(stack)].lan_ip}:{PROMETHEUS_PORT}",
        login=_scrape_auth(mon).get("basic_auth"),
        links=(("Prometheus", external_url(stack, mon, "prometheus")), ("Alertmanager", external_url(stack, mon, "alertmanager"))),
        backup_max_age=BACKUP_MAX_AGE_HOURS * 3600,
    )


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """The monitoring role's files, packages and units; nothing while the stack has no `monitoring` section."""
    mon = stack.monitoring
    if mon is None:
        return
    plan.files += monitoring_files(stack, mon)
    plan.packages += PACKAGES
    plan.units += [PROMETHEUS_UNIT, ALERTMANAGER_UNIT, BLACKBOX_UNIT]
    # The guard's nginx; on a host that is also the proxy, that role brings it (and drops Debian's site).
    if "reverse_proxy" not in stack.hosts[host].roles:
        plan.packages.append("nginx")
        plan.units.append(GUARD_UNIT)
        plan.absent.append((DEBIAN_DEFAULT_SITE, GUARD_UNIT))
    inventory.contribute(stack, mon, inventory_facts(stack, mon), plan, GUARD_USERS)
    if mon.pve_exporter is not None:
        plan.packages += ["python3-venv"]
        plan.units += [PVE_UNIT]
        plan.prepare.append(pve_install_step(mon))


def _secret(name: str, source: str, encode=None) -> LateValue:
    return LateValue(re.escape(name), "config-secret", source=source, encode=encode)


# How each secret goes into its file (YAML-quoted where it lands in YAML); every one stays a Pulumi secret.
LATE = (
    _secret(LATE_SMTP_PASSWORD, SMTP_PASSWORD),  # a file of its own, read as it is
    _secret(LATE_MATRIX_URL, MATRIX_WEBHOOK_URL, lambda _stack, url: nginx_string(url, MATRIX_WEBHOOK_URL)),  # the guard's nginx config
    _secret(LATE_PVE_TOKEN, PVE_EXPORTER_TOKEN, lambda _stack, token: yaml_scalar(token)),
    _secret(LATE_WEB_USERS, UI_PASSWORD_HASHES, lambda stack, hashes: web_users(stack, hashes)),
    _secret(LATE_SCRAPE_PASSWORD, UI_PASSWORD_HASHES, lambda _stack, hashes: scrape_password(hashes)),
    _secret(LATE_GUARD_USERS, UI_PASSWORD_HASHES, lambda stack, hashes: guard_users(stack, hashes)),
    _secret(LATE_INTERNAL_AUTH, UI_PASSWORD_HASHES, lambda _stack, hashes: internal_auth(hashes)),
    _secret(LATE_ALERTMANAGER_USERS, UI_PASSWORD_HASHES, lambda _stack, hashes: alertmanager_users(hashes)),
)

NAME = "monitoring"
ROLE = Role(
    NAME,
    contribute,
    late=(*LATE, *inventory.LATE),
    # nginx: the guard in front of Alertmanager (reverse_proxy declares it too: each role declares its own).
    bare_units=("prometheus.service", "prometheus-alertmanager.service", "prometheus-blackbox-exporter.service",
                "nginx.service"),
    packages=(*PACKAGES, "nginx", "python3-venv", *inventory.PACKAGES),
)


# --- the values behind the late placeholders, pure so the lab and the program make them alike -------


def _bcrypt_salt(key: bytes, user: str) -> bytes:
    """A salt derived from the secret: the same secret gives the same file, so an unchanged secret
    does not re-run the converge on every `pulumi up`."""
    alphabet = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hmac.new(key, f"bcrypt-salt:{user}".encode(), hashlib.sha256).digest()
    chars = bytes(alphabet[b % 64] for b in digest[:21]) + bytes([alphabet[(digest[21] % 4) * 16]])
    return b"$2b$10$" + chars


def scrape_password(ui_password_hashes: str) -> str:
    """Prometheus' own password (its scrapes of itself and Alertmanager, its alert pushes), derived
    from the members' hashes secret: no further secret to keep, and it changes when that one does."""
    digest = hmac.new(ui_password_hashes.encode(), b"hypha-infra prometheus scrape password", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def web_users(stack: Stack, ui_password_hashes: str) -> str:
    """The `basic_auth_users` entries: every person of the stack's access lists who has a hash in the
    secret (a JSON map login -> bcrypt hash, from `htpasswd -nbBC 10 ''`), plus Prometheus itself."""
    lines = [f"  {name}: {yaml_scalar(h)}" for name, h in _people_hashes(stack, ui_password_hashes)]
    lines.append(alertmanager_users(ui_password_hashes))
    return "\n".join(lines)


def _people_hashes(stack: Stack, ui_password_hashes: str) -> list[tuple[str, str]]:
    hashes = json.loads(ui_password_hashes)
    members = sorted(set(stack.access.admins) | set(stack.access.members))
    return [(name, hashes[name]) for name in members if name in hashes]


@functools.lru_cache(maxsize=8)
def _own_hash(ui_password_hashes: str) -> str:
    # A pure function of the secret (the salt is derived from it too), asked for three times per
    # stack (web, Alertmanager and guard users); bcrypt at cost 10 is about 60 ms each time.
    password = scrape_password(ui_password_hashes)
    return bcrypt.hashpw(password.encode(), _bcrypt_salt(ui_password_hashes.encode(), SCRAPE_USER)).decode()


def alertmanager_users(ui_password_hashes: str) -> str:
    """Alertmanager's own `basic_auth_users`: the internal login alone (the guard and Prometheus)."""
    return f"  {SCRAPE_USER}: {yaml_scalar(_own_hash(ui_password_hashes))}\n"


def guard_users(stack: Stack, ui_password_hashes: str) -> str:
    """The guard's auth_basic_user_file (`login:bcrypt` lines): people with a hash, and Prometheus."""
    lines = [f"{name}:{h}" for name, h in _people_hashes(stack, ui_password_hashes)]
    lines.append(f"{SCRAPE_USER}:{_own_hash(ui_password_hashes)}")
    for line in lines:
        if any(c in line for c in "\n\r"):
            raise ValueError("monitoringUiPasswordHashes: a hash holds a line break")
    return "\n".join(lines) + "\n"


def internal_auth(ui_password_hashes: str) -> str:
    """The Authorization header the guard sends Alertmanager, and the relay expects, nginx-quoted."""
    token = base64.b64encode(f"{SCRAPE_USER}:{scrape_password(ui_password_hashes)}".encode()).decode()
    return f'"Basic {token}"'  # base64: nothing in it nginx would read as a quote or a variable


def login_late_values(stack: Stack, ui_password_hashes: str) -> dict[str, str]:
    """Every late value made from the UI hashes secret, by name: what components/late.py makes
    one by one, for the lab and the tests."""
    return {
        LATE_WEB_USERS: web_users(stack, ui_password_hashes),
        LATE_SCRAPE_PASSWORD: scrape_password(ui_password_hashes),
        LATE_GUARD_USERS: guard_users(stack, ui_password_hashes),
        LATE_INTERNAL_AUTH: internal_auth(ui_password_hashes),
        LATE_ALERTMANAGER_USERS: alertmanager_users(ui_password_hashes),
    }
