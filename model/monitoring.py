"""The `monitoring` section: what Prometheus scrapes and probes, alert routing and who sees the UIs.

What follows from it (the monitoring host, its ports, the UI services) is model/derive_monitoring.py;
its checks against the catalog are model/check_monitoring.py.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .backup import SshTarget
from .base import _Model
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
    shown,
    text_type,
)

# The alert rules by name, in the rules file's order: templates/monitoring/rules.yml.j2, then the
# mail role's group (templates/mail/rules.yml.j2). tests/test_monitoring_model.py holds this list
# and the rendered rules equal, so an alert added there must be named here.
ALERTS = (
    "InstanceDown", "CpuSaturated", "MemoryPressure", "DiskSpaceLow", "InodesLow", "DiskWritesSustained",
    "SystemdUnitFailed", "BackupTooOld", "RestoreDrillTooOld", "RestoreDrillFailed", "BackupNeverReported",
    "RestoreDrillNeverReported", "ProbeFailing", "CertificateExpiringSoon",
    "BackupRepositoryTampered", "BackupTargetJobFailed", "BackupSpaceRunningOut", "BackupRepositoryNearQuota",
    "DmarcFailures", "MailQueueGrowing", "MailDeliveriesDeferred",
)


def _alert_name(value: str) -> str:
    if value not in ALERTS:
        raise ValueError(f"{shown(value)} is not one of the stack's alerts ({', '.join(ALERTS)})")
    return value


AlertName = text_type("alert name", _alert_name, max_length=64)


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
    alert_waits: dict[AlertName, Duration] = Field(
        default_factory=dict,
        description="How long an alert's condition must hold before it fires (its rule's `for:`), per alert, in "
        "place of the rule's own wait, e.g. `{MemoryPressure: 10m}`. An alert of a part the stack does not have "
        "(mail, backups) has no rule to change.",
    )
    status_offsite: Optional[StatusOffsite] = Field(
        default=None,
        description="Copy the status page (up/down, since when, the admins' note) there every few minutes, so members "
        "can read it while the stack's machines are down; none: the page stays on the monitoring host only.",
    )
