"""The monitoring secrets: the Proxmox exporter's API token and alert routing credentials."""

from __future__ import annotations

import pulumi

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


def late_value(stack: Stack, name: str) -> pulumi.Output[str]:
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
    raise KeyError(f"late value {name!r}: components/monitoring.py makes no such value")
