"""The `monitoring` section: what Prometheus scrapes and probes, alert routing and who sees the UIs.

What follows from it (the monitoring host, its ports, the UI services) is model/derive_monitoring.py;
its checks against the catalog are model/check_monitoring.py.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import _Model
from .types import Duration, Email as EmailAddress, Flag, HostPort, HttpUrl, Login, PveTokenName, PveUser, Version


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
