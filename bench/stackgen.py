"""Generates valid stack configs of any number of hosts from the real prod config, for benchmarks only."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from model.load import read_stack_config

HOSTS_PER_NODE = 50
# Generated, never connected to: private LAN, documentation range for the few public addresses.
LAN = ipaddress.IPv4Network("10.64.0.0/16")
PUBLIC_V4 = ipaddress.IPv4Network("203.0.113.0/24")
PUBLIC_V6 = ipaddress.IPv6Network("2001:db8:1::/64")
FIRST_VM_ID = 10_000


def _node(hosts_on_it: int) -> dict[str, Any]:
    # Sized with headroom for the largest generated host (4 cores, 4 GiB, 40 GiB) on every slot.
    return {
        "cores": 128,
        "memory_mb": 4096 * hosts_on_it + 8192,
        "reserved_memory_mb": 4096,
        "storage": {"local-nvme": 40 * hosts_on_it + 100, "hdd": 2000},
        "bridges": ["vmbr0", "vmbr2", "vmbr3"],
    }


def _layout(hosts: int) -> list[tuple[str, list[str]]]:
    """Host names and roles: one gateway, a few infrastructure hosts, the rest app hosts."""
    if hosts < 5:
        raise ValueError("a generated stack needs at least 5 hosts (gateway, proxy, dns, monitor, backup)")
    proxies = max(1, hosts // 100)
    dns = 1 if hosts < 100 else 2
    layout = [("gateway", ["gateway"])]
    layout += [(f"proxy{i + 1}", ["reverse_proxy"]) for i in range(proxies)]
    layout += [(f"dns{i + 1}", ["dns"]) for i in range(dns)]
    layout += [("monitor1", ["monitoring"]), ("backup1", ["backup_target"])]
    layout += [(f"app{i + 1:04d}", ["app"]) for i in range(hosts - len(layout))]
    return layout


def generate(hosts: int, stack: str = "prod") -> dict[str, Any]:
    raw = copy.deepcopy(read_stack_config(stack))
    domain = raw["site"]["domain"]
    layout = _layout(hosts)
    node_count = -(-hosts // HOSTS_PER_NODE)
    node_names = [f"kvm{i + 1}" for i in range(node_count)]

    raw["site"]["vm_ids"] = {"first": FIRST_VM_ID, "last": FIRST_VM_ID + hosts + 999}
    raw["proxmox"]["nodes"] = {
        name: _node(sum(1 for j in range(hosts) if j % node_count == i)) for i, name in enumerate(node_names)
    }
    raw["proxmox"]["template"] = {"vm_id": 9000, "node": node_names[0]}
    lan_gateway = LAN.network_address + 1
    raw["network"].update(
        lan_cidr=str(LAN),
        gateway=str(lan_gateway),
        resolvers=[str(lan_gateway)],
        public={
            "bridge": "vmbr0",
            "ipv4_cidr": str(PUBLIC_V4),
            "ipv4_gateway": str(PUBLIC_V4.network_address + 1),
            "ipv6_cidr": str(PUBLIC_V6),
            "ipv6_gateway": str(PUBLIC_V6.network_address + 1),
        },
    )
    raw["access"]["deploy"]["source"] = str(PUBLIC_V4.network_address + 250)

    host_cfg: dict[str, Any] = {}
    public_slot = 10
    for i, (name, roles) in enumerate(layout):
        h: dict[str, Any] = {
            "vm_id": FIRST_VM_ID + 1 + i,
            "node": node_names[i % node_count],
            "lan_ip": str(LAN.network_address + 10 + i),
            "roles": roles,
        }
        if roles[0] in ("gateway", "reverse_proxy", "dns"):
            h["public_ipv4"] = str(PUBLIC_V4.network_address + public_slot)
            h["public_ipv6"] = str(PUBLIC_V6.network_address + public_slot)
            public_slot += 1
        if roles == ["backup_target"]:
            h.update(memory_mb=2048, disk_gb=500, datastore="hdd", holds_data=True)
        elif roles == ["monitoring"]:
            h.update(memory_mb=2048, disk_gb=40)
        elif roles == ["app"] and i % 10 == 0:
            h.update(cores=4, memory_mb=4096, disk_gb=40)
        host_cfg[name] = h
    raw["hosts"] = host_cfg

    services: dict[str, Any] = {
        "prometheus": {
            "host": "monitor1",
            "domains": [f"monitor.{domain}"],
            "port": 9090,
            "data_paths": ["/var/lib/prometheus"],
            "health_path": "/-/healthy",
        }
    }
    for i, (name, roles) in enumerate(layout):
        if roles != ["app"]:
            continue
        svc: dict[str, Any] = {"host": name, "port": 8000 + i % 7}
        if i % 4 != 3:  # three in four app services are on the internet under the site domain
            svc.update(domains=[f"{name}.{domain}"], public=True)
        if i % 3 == 0:
            svc["data_paths"] = [f"/srv/{name}"]
        services[f"svc-{name}"] = svc
    raw["services"] = services
    # The zone names the real catalog's mail and name-server hosts, which a generated stack lacks.
    raw.pop("dns", None)
    # Prod publishes the monitoring UIs through the proxy as services of its own catalog, replaced
    # above; the generated stack keeps them on the VPN.
    if isinstance(raw.get("monitoring"), dict):
        raw["monitoring"]["ui"] = "vpn"
    # Every client's storage quota must fit the target's 500 GiB disk together (model/check_backup.py).
    if isinstance(raw.get("backup"), dict):
        clients = sum(1 for s in services.values() if s.get("data_paths")) + 1
        raw["backup"]["storage_quota"] = f"{max(1, 400 // clients)}G"
        raw["backup"].pop("storage_quotas", None)
    return raw
