"""The inventory page on the monitoring host (issue 16): its builder, the config the builder reads
(made here from the catalog), the timer, the nginx site behind the members' login and the off-site
copy of the status part.

Decisions:
- Part of the monitoring role, not a role of its own: it needs that host's Prometheus, its guard
  nginx and its users file, and a stack has a page exactly when it is watched. A separate role would
  have to be put on the same host by hand and could be put anywhere else by mistake.
- The builder (templates/monitoring/hypha-inventory.py) knows nothing of the catalog: everything
  that comes from config (services, names, keywords, the planned capacity of `make plan`) is in
  one JSON file written here, so the page and the program agree by construction.
- Served by the monitoring host's nginx on INVENTORY_PORT, always behind the guard's login (the
  members' hashes): over the VPN with `ui: vpn`, through the proxy with `ui: proxy` (a public
  catalog service on that port, as the UIs). The page says which machines exist and where they are
  weak, so it is for members, not the internet.
- The admins' note is a file on the monitoring host (NOTE_FILE), not a config field: during an
  outage a note must go out in minutes, not after a pull request and a deploy; the next build
  (5 minutes at most) publishes it and pushes it off-site.
- The off-site copy goes over SSH with rsync, the server's host key pinned as for `backup.offsite`
  (the same model type and known_hosts writer); the builder's key is made by the program and its
  public half is the stack output `status_offsite_public_key`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

from model import capacity, derive
from model import derive_backup as backup_model
from model.derive_monitoring import INVENTORY_PORT, monitoring_host, ui_services
from model.monitoring import Monitoring
from model.stack import Service, Stack

from . import metrics, quote, shortlinks
from .plan import HostPlan, LateValue, ManagedFile, late
from .templates import TEMPLATES, render

TOOL = "/usr/local/lib/hypha-inventory/hypha-inventory"
CONFIG_DIR = "/etc/hypha-inventory"
CONFIG = f"{CONFIG_DIR}/inventory.json"
STATE_DIR = "/var/lib/hypha-inventory"
OUTPUT = f"{STATE_DIR}/www"
NOTE_FILE = f"{STATE_DIR}/note.txt"
SITE = "/etc/nginx/conf.d/hypha-inventory.conf"
UNIT = "hypha-inventory"
SERVICE_FILE = f"/etc/systemd/system/{UNIT}.service"
TIMER_FILE = f"/etc/systemd/system/{UNIT}.timer"
OFFSITE_KEY = f"{CONFIG_DIR}/offsite/id_ed25519"
OFFSITE_KNOWN_HOSTS = f"{CONFIG_DIR}/offsite/known_hosts"
LATE_OFFSITE_KEY = "monitoring/ssh-key/status-offsite"
OFFSITE_PUBKEY = "monitoring/ssh-pubkey/status-offsite"
"""Its public half: not in any file, the stack output `status_offsite_public_key` (__main__.py)."""
# Made by components/late.py. Under the `backups` component: the program has no monitoring component,
# and this is, like borg's offsite key, a key for a server outside the stack. (The parent is part of
# the key's URN: moving it later replaces the key, and the off-site authorized_keys must follow.)
LATE = (
    LateValue(re.escape(LATE_OFFSITE_KEY), "ssh-keypair-private", resource="status-offsite-ssh", parent="backups"),
    LateValue(re.escape(OFFSITE_PUBKEY), "ssh-keypair-public", resource="status-offsite-ssh", parent="backups"),
)
PACKAGES = ("rsync", "openssh-client")
# Rebuilt this often; the page tells readers to distrust it when it is three builds old.
EVERY_MINUTES = 5
STALE_MINUTES = 15
TOP_KEYWORDS = 10
BACKUP_FULL_WARN_DAYS = 14


def retired(svc: Service):
    """The service's retirement (issue 16 item 5, model/stack.py Retired) as the builder reads it:
    {date, redirect}, or None while it runs."""
    return svc.retired.model_dump(mode="json") if svc.retired is not None else None


def served_vhost(svc: Service) -> str:
    """The name the proxy's block for `svc` serves first (nginx's $server_name, what mtail counts):
    render/roles/reverse_proxy.py site(), where `www.x` listed with `x` is redirected to `x`."""
    domain = svc.domains[0]
    if domain.startswith("www.") and domain[4:] in svc.domains:
        domain = domain[4:]
    return domain


def reach(stack: Stack, name: str, svc: Service) -> str:
    guarded = {n for n in ui_services(stack).values() if n}
    if svc.public:
        return "members (login)" if name in guarded else "public"
    return "VPN" if svc.reach == "vpn" else "LAN"


def urls(stack: Stack, svc: Service) -> list[str]:
    if svc.public and svc.domains:
        first = served_vhost(svc)
        return [f"https://{first}/"] + [f"https://{d}/" for d in svc.domains if d != first]
    # A retired service may name a host that is gone (issue 16 item 5): then it has no LAN address.
    if svc.port is not None and svc.host in stack.hosts:
        return [f"http://{stack.hosts[svc.host].lan_ip}:{svc.port}/"]
    return []


def page_url(stack: Stack, mon: Monitoring) -> str:
    """Where members open the page: its public name with `ui: proxy`, else the LAN address (VPN)."""
    svc = ui_services(stack).get("inventory")
    if mon.ui == "proxy" and svc:
        return f"https://{stack.services[svc].domains[0]}/"
    return f"http://{stack.hosts[monitoring_host(stack)].lan_ip}:{INVENTORY_PORT}/"


@dataclass(frozen=True)
class FromMonitoring:
    """What the page takes from the monitoring role (render/roles/monitoring.py makes it): which
    services are probed, how to reach Prometheus, where members open the UIs, the backup alert's age."""

    probed: frozenset
    prometheus_url: str
    login: Optional[dict]
    """Prometheus' `basic_auth` (username, password_file) when its UI asks for a login, else None."""
    links: tuple
    backup_max_age: int


def builder_config(stack: Stack, mon: Monitoring, role: FromMonitoring) -> dict:
    """What the builder reads: every fact of the page that comes from config."""
    host = monitoring_host(stack)
    clients = set(backup_model.clients(stack)) if stack.backup is not None else set()
    probed = role.probed
    services = [
        {
            "name": name,
            "urls": urls(stack, svc),
            "host": svc.host,
            "reach": reach(stack, name, svc),
            "probed": name in probed,
            # The repository is the host's: a service's data is in its host's backups.
            "backup": svc.host if svc.host in clients and svc.data_paths else None,
            "retired": retired(svc),
        }
        for name, svc in sorted(stack.services.items())
    ]
    proxied = [s for s in stack.services.values() if s.public and s.domains]
    vhosts = sorted({served_vhost(s) for s in proxied})
    short = next((s for _, s in sorted(stack.services.items()) if s.shortlinks and s.public and s.domains), None)
    sl = None
    if short is not None and derive.hosts_with_role(stack, "reverse_proxy"):
        links = shortlinks.load(shortlinks.CSV_PATH, shortener_host=short.domains[0])
        sl = {"vhost": served_vhost(short), "keywords": sorted(link.keyword for link in links)}
    usage = capacity.usage(stack.proxmox, stack.hosts)
    nodes = [
        {
            "name": node,
            "planned": {
                "vcpus": [u.vcpus.used, u.vcpus.offered],
                "memory_mb": [u.memory_mb.used, u.memory_mb.offered],
                "storage": {ds: [s.used, s.offered] for ds, s in sorted(u.storage.items())},
            },
            "storage": sorted(u.storage),
        }
        for node, u in sorted(usage.items())
    ]
    offsite = None
    if mon.status_offsite is not None:
        o = mon.status_offsite
        offsite = {"host": o.host, "port": o.port, "user": o.user, "path": o.path, "key": OFFSITE_KEY,
                   "known_hosts": OFFSITE_KNOWN_HOSTS, "url": o.url}
    auth = role.login
    links = list(role.links)
    if offsite and offsite["url"]:
        links.append(("Off-site status copy", offsite["url"]))
    return {
        "site": stack.site.domain,
        "prometheus": {
            "url": role.prometheus_url,
            "user": auth["username"] if auth else None,
            "password_file": auth["password_file"] if auth else None,
        },
        "output": OUTPUT,
        "note_file": NOTE_FILE,
        "stale_minutes": STALE_MINUTES,
        "top_keywords": TOP_KEYWORDS,
        "backup_max_age": role.backup_max_age,
        "backup_full_warn_days": BACKUP_FULL_WARN_DAYS,
        "metrics": {
            "http_requests": metrics.HTTP_REQUESTS,
            "shortlink_hits": metrics.SHORTLINK_HITS,
            "backup_last_success": metrics.BACKUP_LAST_SUCCESS,
            "drill_last_success": metrics.DRILL_LAST_SUCCESS,
            "drill_ok": metrics.DRILL_OK,
            "backup_free": metrics.REPOSITORY_FREE,
        },
        "services": services,
        "vhosts": vhosts,
        "shortlinks": sl,
        "nodes": nodes,
        "backup_target": backup_model.target_name(stack),
        "offsite": offsite,
        "monitoring_links": links,
    }


def files(stack: Stack, mon: Monitoring, role: FromMonitoring, users_file: str) -> list[ManagedFile]:
    host = monitoring_host(stack)
    out = [
        ManagedFile(TOOL, (TEMPLATES / "monitoring/hypha-inventory.py").read_text(), mode="0755", check="python"),
        ManagedFile(CONFIG, json.dumps(builder_config(stack, mon, role), indent=1, sort_keys=True) + "\n", check="json"),
        ManagedFile(
            SERVICE_FILE,
            render("monitoring/inventory.service.j2", tool=TOOL, config=CONFIG, state=STATE_DIR.rsplit("/", 1)[1]),
        ),
        ManagedFile(TIMER_FILE, render("monitoring/inventory.timer.j2", minutes=EVERY_MINUTES), unit=f"{UNIT}.timer", action="restart"),
        ManagedFile(
            SITE,
            render("monitoring/inventory-site.conf.j2", listen=f"{stack.hosts[host].lan_ip}:{INVENTORY_PORT}",
                   users_file=users_file, root=OUTPUT),
            unit="nginx", check="nginx", mode="0640", owner="root", group="www-data",
        ),
    ]
    o = mon.status_offsite
    if o is not None:
        out += [
            ManagedFile(OFFSITE_KEY, late(LATE_OFFSITE_KEY), mode="0600", owner="prometheus", group="prometheus",
                        check="ssh_private_key"),
            ManagedFile(OFFSITE_KNOWN_HOSTS, quote.known_hosts_line(o.host, o.port, o.host_key) + "\n", check="known_hosts"),
        ]
    return out


def contribute(stack: Stack, mon: Monitoring, role: FromMonitoring, plan: HostPlan, users_file: str) -> None:
    plan.files += files(stack, mon, role, users_file)
    plan.units.append(f"{UNIT}.timer")
    if mon.status_offsite is not None:
        plan.packages += list(PACKAGES)
