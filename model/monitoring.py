"""The `monitoring` section: what Prometheus scrapes and probes, alert routing and who sees the UIs."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .backup import SshTarget
from .base import _Model
from .errors import Problem
from .types import (
    AbsolutePath,
    Duration,
    Email as EmailAddress,
    Flag,
    HostPort,
    HttpUrl,
    Login,
    PveTokenName,
    PveUser,
    RemoteUser,
    Version,
)

# Where the monitoring host's daemons listen. Prometheus and Alertmanager on its LAN address (the
# UIs, and the proxy in front of them), the exporters only on loopback (Prometheus asks them).
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
BLACKBOX_PORT = 9115
PVE_EXPORTER_PORT = 9221
# mtail on each reverse proxy (render/access_metrics.py), on its LAN address, for Prometheus alone.
MTAIL_PORT = 3903
# The inventory page (render/inventory.py), behind the members' login, on the monitoring host's nginx.
INVENTORY_PORT = 9097


# What members open on the monitoring host, behind a login: the two UIs and the inventory page.
UI_PORTS = (("prometheus", PROMETHEUS_PORT), ("alertmanager", ALERTMANAGER_PORT), ("inventory", INVENTORY_PORT))


def monitoring_host(stack) -> Optional[str]:
    """The host with role `monitoring` (check_monitoring allows one), or None."""
    names = sorted(n for n, h in stack.hosts.items() if "monitoring" in h.roles)
    return names[0] if names else None


def ui_services(stack) -> dict[str, Optional[str]]:
    """`prometheus`/`alertmanager`/`inventory` to the catalog service that publishes that UI (its
    port, on the monitoring host), or None. Only public ones count: they are what the proxy serves."""
    host = monitoring_host(stack)
    out: dict[str, Optional[str]] = {}
    for ui, port in UI_PORTS:
        out[ui] = next(
            (n for n, s in sorted(stack.services.items()) if s.host == host and s.port == port and s.public), None
        )
    return out


def inbound_rules(stack, host: str) -> list:
    """Firewall allow rules (model.derive.Rule) this section adds to `host`: with `ui: vpn`, the
    Prometheus and Alertmanager UIs from the gateway, which is where VPN traffic enters the LAN (it
    masquerades members' devices to its LAN address). With `ui: proxy` the catalog's public
    services open those ports to the proxy instead (model.derive)."""
    from .derive import Rule, gateway

    mon = stack.monitoring
    watcher = monitoring_host(stack)
    if mon is not None and watcher is not None and "reverse_proxy" in stack.hosts[host].roles:
        # The proxy's access-log counters (mtail), read by Prometheus alone.
        mtail = [Rule("tcp", MTAIL_PORT, f"{stack.hosts[watcher].lan_ip}/32", f"mtail from {watcher}")]
    else:
        mtail = []
    if mon is None or mon.ui != "vpn" or host != monitoring_host(stack) or "gateway" in stack.hosts[host].roles:
        return mtail
    source = f"{gateway(stack).lan_ip}/32"
    return mtail + [
        Rule("tcp", PROMETHEUS_PORT, source, "prometheus ui from the vpn (via the gateway)"),
        Rule("tcp", ALERTMANAGER_PORT, source, "alertmanager ui from the vpn (via the gateway)"),
        Rule("tcp", INVENTORY_PORT, source, "inventory page from the vpn (via the gateway)"),
    ]


class Email(_Model):
    to: list[EmailAddress] = Field(min_length=1, description="Addresses alerts are mailed to.")
    sender: EmailAddress = Field(description="The From address of alert mail, e.g. `alerts@hypha.coop`.")
    smarthost: HostPort = Field(description="SMTP server as `host:port` (587 with STARTTLS, as most providers).")
    username: Optional[Login] = Field(
        default=None,
        description="SMTP login; its password is the secret `alertSmtpPassword`. None: the server takes mail unauthenticated.",
    )
    require_tls: Flag = Field(default=True, description="Refuse to send without STARTTLS.")


class Matrix(_Model):
    url: Optional[HttpUrl] = Field(
        default=None,
        description="Webhook URL Alertmanager posts to (a Matrix bridge such as hookshot or matrix-alertmanager-receiver).",
    )
    url_secret: Flag = Field(
        default=False,
        description="Read the URL from the secret `alertMatrixWebhookUrl` instead (for URLs that carry a token).",
    )


class PveExporter(_Model):
    user: PveUser = Field(default="prometheus@pve", description="Proxmox user of the API token (give it the PVEAuditor role).")
    token_name: PveTokenName = Field(
        default="monitoring", description="Name of that user's API token; its value is the secret `pveExporterToken`."
    )
    version: Version = Field(default="3.10.2", description="prometheus-pve-exporter release pip installs into /opt/prometheus-pve-exporter.")


class StatusOffsite(SshTarget):
    """Where the status page is copied to, off the stack's own machines (an SSH server with rsync)."""

    user: RemoteUser = Field(
        description="Login on the off-site server; its authorized_keys holds the output `status_offsite_public_key`."
    )
    path: AbsolutePath = Field(
        description="Directory the off-site server's web server serves; the status page is written to `<path>/index.html`."
    )
    url: Optional[HttpUrl] = Field(
        default=None, description="Where members open that copy (for the README and the inventory page's link)."
    )


class Monitoring(_Model):
    scrape_interval: Duration = Field(default="30s", description="How often Prometheus scrapes and evaluates alert rules.")
    retention: Duration = Field(default="30d", description="How long Prometheus keeps samples.")
    ui: Literal["vpn", "proxy"] = Field(
        default="vpn",
        description=(
            "How members reach the Prometheus and Alertmanager UIs: `vpn` (the LAN address, from the VPN only) or "
            "`proxy` (public services on the monitoring host, ports 9090 and 9093, behind a login: the secret "
            "`monitoringUiPasswordHashes`, bcrypt hash per person)."
        ),
    )
    verify_certificates: Flag = Field(
        default=True,
        description="Probes fail on a certificate the system does not trust (false for ACME staging certificates).",
    )
    email: Optional[Email] = Field(default=None, description="Alert mail (critical alerts).")
    matrix: Optional[Matrix] = Field(default=None, description="Alerts to a Matrix room through a webhook (every alert).")
    group_wait: Duration = Field(default="30s", description="How long Alertmanager gathers alerts of a new group before notifying.")
    group_interval: Duration = Field(default="5m", description="Wait before notifying about new alerts in a group already notified.")
    repeat_interval: Duration = Field(default="4h", description="Repeat a still-firing alert after this long.")
    pve_exporter: Optional[PveExporter] = Field(
        default=None, description="Proxmox node metrics through prometheus-pve-exporter (from PyPI); none: not scraped."
    )
    status_offsite: Optional[StatusOffsite] = Field(
        default=None,
        description="Copy the status page (up/down, since when, the admins' note) there every few minutes, so members "
        "can read it while the stack's machines are down; none: the page stays on the monitoring host only.",
    )


def check_monitoring(monitoring, site, hosts, services, people) -> list[Problem]:
    """Cross-field checks of the monitoring section against the catalog."""
    out: list[Problem] = []
    add = lambda path, msg: out.append(Problem(path, msg))  # noqa: E731
    mon_hosts = sorted(n for n, h in hosts.items() if "monitoring" in h.roles)
    if len(mon_hosts) > 1:
        add("hosts", f"{len(mon_hosts)} hosts have role `monitoring` ({', '.join(mon_hosts)}); one Prometheus watches the stack, keep the role on one")
    if monitoring is None:
        return out
    if not mon_hosts:
        add("monitoring", "is set but no host has role `monitoring`; add the role to a host (or remove the section)")
        return out
    if monitoring.email is None and monitoring.matrix is None:
        add("monitoring", "has no receiver, so alerts would reach nobody; add monitoring.email and/or monitoring.matrix")
    if monitoring.matrix is not None and (monitoring.matrix.url is None) == (not monitoring.matrix.url_secret):
        add("monitoring.matrix", "needs exactly one of `url` and `url_secret: true` (the secret alertMatrixWebhookUrl)")
    if monitoring.ui == "proxy":
        host = mon_hosts[0]
        for ui, port in UI_PORTS:
            if not any(s.host == host and s.port == port and s.public for s in services.values()):
                add(
                    "monitoring.ui",
                    f"is `proxy` but no public service publishes the {ui} UI; add services.{ui} "
                    f"{{host: {host}, port: {port}, public: true, domains: [<name>]}} or set ui: vpn",
                )
    return out
