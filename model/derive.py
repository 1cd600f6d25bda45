"""What a valid stack implies: who logs in where, which hosts hold data, which ports are open, tags.

Everything here is computed from config; nothing branches on the stack's name. The plain facts
("which host has role X", "does it hold data") are model/facts.py's, which the functions here of the
same names ask; what one section implies is model/derive_<section>.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import derive_backup, derive_monitoring, facts
from .derive_monitoring import ALERTMANAGER_PORT, PROMETHEUS_PORT
from .roles import public_ports, scraped_ports
from .stack import Host, Stack

NODE_EXPORTER_PORT = 9100
DEPLOY_USER = "deploy"


@dataclass(frozen=True)
class Rule:
    """One inbound allow rule. `source` None means from anywhere."""

    proto: str
    port: int
    source: Optional[str]
    comment: str


def gateway_name(stack: Stack) -> str:
    return facts.gateway_name(stack.hosts)


def gateway(stack: Stack) -> Host:
    return stack.hosts[gateway_name(stack)]


def gateway_address(stack: Stack) -> str:
    """Where people and the deployer reach the bastion: its public address, else its LAN address (VPN)."""
    gw = gateway(stack)
    return str(gw.public_ipv4 or gw.lan_ip)


def login_people(stack: Stack) -> list[str]:
    """People with a login on every host of the stack. Admins always, members where the stack allows."""
    names = set(stack.access.admins)
    if stack.site.ssh_access == "members":
        names |= set(stack.access.members)
    return sorted(names)


def sudoers(stack: Stack) -> list[str]:
    return sorted(stack.access.admins)


def services_on(stack: Stack, host: str) -> dict:
    return facts.services_on(stack.services, host)


def holds_data(stack: Stack, host: str) -> bool:
    return facts.holds_data(stack.hosts, stack.services, host)


def protected(stack: Stack, host: str) -> bool:
    return stack.site.protect_data_vms and holds_data(stack, host)


def hosts_with_role(stack: Stack, role: str) -> list[str]:
    return facts.hosts_with_role(stack.hosts, role)


def deploy_address(stack: Stack) -> str:
    """The gateway's second LAN address, which only the deploy user's jumped sessions leave from.

    Every session jumped through the bastion reaches a LAN host from the gateway, so a `from=` on the
    gateway's own address would let any member who can jump use a leaked deploy key there. The gateway
    holds this address too (render/roles/gateway.py) and its nftables SNATs the deploy user's
    connections to LAN hosts' SSH to it (`meta skuid`: the sshd child that opens the direct-tcpip
    channel runs as the logged-in user). Derived, not configured: the last usable address of
    network.lan_cidr (e.g. .254 of a /24), which model/checks.py keeps free of hosts and the LAN gateway.
    """
    return str(deploy_address_in(stack.network.lan_cidr))


def deploy_address_in(cidr):
    """The last usable address of a LAN (model/checks.py refuses a stack whose host or LAN gateway has it)."""
    return cidr.broadcast_address - 1


def deploy_key_source(stack: Stack, host: str) -> str:
    """The only address the deploy key is accepted from on `host`.

    The gateway accepts it from the deployment server; every other host from the gateway's deploy
    address (deploy_address), where the deploy user's jumped sessions and only those arrive from.
    """
    if host == gateway_name(stack):
        return str(stack.access.deploy.source)
    return deploy_address(stack)


PROXMOX_API_PORT = 8006


def cluster_firewall_rules(stack: Stack) -> list[Rule]:
    """The Proxmox nodes' own inbound rules (datacenter level): API and SSH from the management
    networks, the API alone from `api_only`. Proxmox adds its own for the cluster network."""
    fw = stack.proxmox.firewall
    rules = []
    for net in fw.management:
        rules += [
            Rule("tcp", PROXMOX_API_PORT, str(net), f"proxmox api from {net} (management)"),
            Rule("tcp", 22, str(net), f"ssh to the node from {net} (management)"),
        ]
    rules += [Rule("tcp", PROXMOX_API_PORT, str(net), f"proxmox api from {net}") for net in fw.api_only]
    return rules


def inbound_rules(stack: Stack, host: str) -> list[Rule]:
    """Inbound allow rules for `host`, everything else dropped. Shared by the Proxmox and host firewalls."""
    h = stack.hosts[host]
    rules: list[Rule] = []
    if "gateway" not in h.roles:
        rules.append(Rule("tcp", 22, f"{gateway(stack).lan_ip}/32", "ssh from the gateway only"))
        rules.append(Rule("tcp", 22, f"{deploy_address(stack)}/32", "ssh from the gateway's deploy address"))
    for role in sorted(h.roles):
        rules += [Rule(proto, port, None, comment) for proto, port, comment in public_ports(role)]
    if "gateway" in h.roles:
        rules.append(Rule("udp", stack.network.vpn.port, None, "wireguard vpn"))
    for mon in facts.hosts_with_role(stack.hosts, "monitoring"):
        rules.append(Rule("tcp", NODE_EXPORTER_PORT, f"{stack.hosts[mon].lan_ip}/32", f"node_exporter from {mon}"))
    proxies = facts.proxies(stack.hosts)
    for name, svc in sorted(services_on(stack, host).items()):
        # A retired service's upstream is no longer proxied, so nothing reaches its port.
        if svc.port is None or svc.retired is not None:
            continue
        if svc.public:
            for p in proxies:
                rules.append(Rule("tcp", svc.port, f"{stack.hosts[p].lan_ip}/32", f"{name} from proxy {p}"))
        elif svc.reach == "vpn":
            # VPN traffic enters the LAN masqueraded to the gateway's address.
            rules.append(Rule("tcp", svc.port, f"{gateway(stack).lan_ip}/32", f"{name} from the vpn (via the gateway)"))
            for mon in facts.hosts_with_role(stack.hosts, "monitoring"):
                rules.append(Rule("tcp", svc.port, f"{stack.hosts[mon].lan_ip}/32", f"{name} probe from {mon}"))
        else:
            rules.append(Rule("tcp", svc.port, str(stack.network.lan_cidr), f"{name} on the LAN"))
    rules += _backup_rules(stack, host)
    rules += _scraped_rules(stack, host)
    rules += _monitoring_rules(stack, host)
    # Same port and source twice (e.g. a role port and a service) is one rule.
    seen, unique = set(), []
    for r in rules:
        if (r.proto, r.port, r.source) not in seen:
            seen.add((r.proto, r.port, r.source))
            unique.append(r)
    return unique


def _backup_rules(stack: Stack, host: str) -> list[Rule]:
    """What the backup section opens on the target: borg over SSH from each client."""
    if host != derive_backup.target_name(stack):
        return []
    return [Rule("tcp", 22, f"{stack.hosts[c].lan_ip}/32", f"borg from {c}") for c in derive_backup.clients(stack)]


def _scraped_rules(stack: Stack, host: str) -> list[Rule]:
    """The exporters of the host's roles (model/roles.py scraped_ports: the proxy's mtail, the mail
    host's Postfix exporter), open to the monitoring host alone once the stack is monitored."""
    if stack.monitoring is None:
        return []
    return [
        Rule("tcp", port, f"{stack.hosts[mon].lan_ip}/32", f"{what} from {mon}")
        for role in sorted(stack.hosts[host].roles)
        for port, what in scraped_ports(role)
        for mon in facts.hosts_with_role(stack.hosts, "monitoring")
    ]


def _monitoring_rules(stack: Stack, host: str) -> list[Rule]:
    """What the monitoring section opens with `ui: vpn`: the Prometheus and Alertmanager UIs from the
    gateway, which is where VPN traffic enters the LAN (it masquerades members' devices to its LAN
    address). With `ui: proxy` the catalog's public services open those ports to the proxy instead
    (inbound_rules above)."""
    mon = stack.monitoring
    watcher = derive_monitoring.monitoring_host(stack)
    if mon is None or mon.ui != "vpn" or host != watcher or "gateway" in stack.hosts[host].roles:
        return []
    source = f"{gateway(stack).lan_ip}/32"
    return [
        Rule("tcp", PROMETHEUS_PORT, source, "prometheus ui from the vpn (via the gateway)"),
        Rule("tcp", ALERTMANAGER_PORT, source, "alertmanager ui from the vpn (via the gateway)"),
        Rule("tcp", derive_monitoring.INVENTORY_PORT, source, "inventory page from the vpn (via the gateway)"),
    ]


def vm_tags(stack: Stack, host: str) -> list[str]:
    """Proxmox tags, sorted: Proxmox returns them sorted, so unsorted input would show as drift."""
    return sorted({"hypha", stack.site.stack, *stack.hosts[host].roles, *stack.site.tags})


def public_endpoints(stack: Stack) -> list[dict]:
    """Public URLs and the address they are served from (the reverse proxy's public address)."""
    front_name = facts.front_host(stack.hosts)
    out = []
    for name, svc in sorted(stack.services.items()):
        if not svc.public:
            continue
        front = stack.hosts[front_name] if front_name else None
        for domain in svc.domains:
            out.append(
                {
                    "service": name,
                    "url": f"https://{domain}/",
                    "ipv4": str(front.public_ipv4) if front and front.public_ipv4 else None,
                    "ipv6": str(front.public_ipv6) if front and front.public_ipv6 else None,
                    "upstream": _upstream(stack, svc),
                }
            )
    return out


def _upstream(stack: Stack, svc) -> str:
    """What the proxy does with a service's requests, in a few words (the plan's endpoint table)."""
    if svc.retired is not None:
        r = svc.retired
        return f"retired {r.date.isoformat()}: " + (f"{r.status} {r.redirect}" if r.redirect else f"{r.status} gone")
    return f"{stack.hosts[svc.host].lan_ip}:{svc.port}" if svc.port else "static"


def ssh_jump_command(stack: Stack, host: str, user: str = "<you>") -> str:
    """The one-line command a person runs to reach `host` through the bastion."""
    gw_addr = gateway_address(stack)
    if host == gateway_name(stack):
        return f"ssh {user}@{gw_addr}"
    return f"ssh -J {user}@{gw_addr} {user}@{stack.hosts[host].lan_ip}"


@dataclass(frozen=True)
class VpnPeer:
    person: str
    public_key: str
    address: str


def vpn_address(stack: Stack) -> str:
    """The gateway's own address on the VPN: the first host of network.vpn.cidr."""
    return str(next(stack.network.vpn.cidr.hosts()))


def vpn_peers(stack: Stack) -> list[VpnPeer]:
    """A peer for every person with a login on this stack and a WireGuard key; others get none."""
    cidr = stack.network.vpn.cidr
    return [
        VpnPeer(name, p.wireguard.public_key, str(cidr.network_address + p.wireguard.index))
        for name in login_people(stack)
        if (p := stack.people[name]).wireguard is not None
    ]
