"""The monitoring secrets: the Proxmox exporter's API token and alert routing credentials."""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_tls as tls

from render import inventory as render_inventory
from render.roles import monitoring as render_monitoring
from model.load import PROJECT
from model.stack import Stack

# Pulumi secrets (`pulumi config set --secret <key>`) this module reads, each only when the
# monitoring section needs it: SMTP login, Matrix webhook URL, pve-exporter token, UI logins.
SMTP_PASSWORD = "alertSmtpPassword"
MATRIX_WEBHOOK_URL = "alertMatrixWebhookUrl"
PVE_EXPORTER_TOKEN = "pveExporterToken"
UI_PASSWORD_HASHES = "monitoringUiPasswordHashes"
SECRET_KEYS = (SMTP_PASSWORD, MATRIX_WEBHOOK_URL, PVE_EXPORTER_TOKEN, UI_PASSWORD_HASHES)


def _secret(key: str) -> pulumi.Output[str]:
    return pulumi.Config(PROJECT).require_secret(key)


def status_offsite_key(stack: Stack) -> Optional[tls.PrivateKey]:
    """The monitoring host's key on the status page's off-site server (render/inventory.py), made
    once per program run when `monitoring.status_offsite` is set; its public half is a stack output."""
    if stack.monitoring is None or stack.monitoring.status_offsite is None:
        return None
    return tls.PrivateKey("status-offsite-ssh", algorithm="ED25519")


def late_value(stack: Stack, name: str, status_key: Optional[tls.PrivateKey] = None) -> pulumi.Output[str]:
    """The value behind a `monitoring/...` placeholder, as it goes into the file (YAML-quoted where
    it lands in YAML). Every one stays a Pulumi secret."""
    r = render_monitoring
    if name == r.LATE_SMTP_PASSWORD:  # a file of its own, read as it is
        return _secret(SMTP_PASSWORD)
    if name == r.LATE_MATRIX_URL:  # in the guard's nginx config
        return _secret(MATRIX_WEBHOOK_URL).apply(lambda url: r.nginx_string(url, MATRIX_WEBHOOK_URL))
    if name == r.LATE_PVE_TOKEN:
        return _secret(PVE_EXPORTER_TOKEN).apply(r.yaml_scalar)
    if name == r.LATE_WEB_USERS:
        return _secret(UI_PASSWORD_HASHES).apply(lambda hashes: r.web_users(stack, hashes))
    if name == r.LATE_SCRAPE_PASSWORD:
        return _secret(UI_PASSWORD_HASHES).apply(r.scrape_password)
    if name == r.LATE_GUARD_USERS:
        return _secret(UI_PASSWORD_HASHES).apply(lambda hashes: r.guard_users(stack, hashes))
    if name == r.LATE_INTERNAL_AUTH:
        return _secret(UI_PASSWORD_HASHES).apply(r.internal_auth)
    if name == r.LATE_ALERTMANAGER_USERS:
        return _secret(UI_PASSWORD_HASHES).apply(r.alertmanager_users)
    if name == render_inventory.LATE_OFFSITE_KEY and status_key is not None:
        return pulumi.Output.secret(status_key.private_key_openssh)
    raise KeyError(f"late value {name!r}: components/monitoring.py makes no such value")
