"""What one host must hold: its managed files, packages, units and accounts, per role, from templates/.

This is the single source of the desired state: cloud-init seeds the access files from it, the
converge script applies all of it, and the drift check compares hosts against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from model import derive
from model.keys import MIN_RSA_BITS
from model.stack import Stack

from . import quote
from .templates import render

HEADER = "managed by hypha-infra"
AUTHORIZED_KEYS_DIR = "/etc/ssh/authorized_keys"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-hypha.conf"
PEOPLE_GROUP = "hypha-people"
SYSCTL_BASE = "/etc/sysctl.d/80-hypha-base.conf"
NTP_SERVERS = ("0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org")


# A value known only when the program runs (a generated secret, a public key Pulumi makes), put in
# a file's content by `late()`. The rendered script carries a placeholder; `render.converge.fill`
# puts the value in on its way to the host (on stdin, never a command line), so no rendered file,
# test fixture or drift report ever holds a secret in clear.
LATE_MARK = re.compile(r"\x00late:([a-z0-9][a-z0-9/_.-]*)\x00")


def late(name: str) -> str:
    """A placeholder for the late value `name` inside a ManagedFile's content."""
    assert re.fullmatch(r"[a-z0-9][a-z0-9/_.-]*", name), name
    return f"\x00late:{name}\x00"


def late_names(content: str) -> list[str]:
    return LATE_MARK.findall(content)


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    unit: Optional[str] = None
    """systemd unit that must pick up a change to this file."""
    action: str = "reload"
    """`reload` (reload-or-restart) or `restart`."""
    check: Optional[str] = None
    """Name of the daemon's own checker the converge script runs on the staged file."""

    @property
    def late(self) -> list[str]:
        """Names of the late values in the content (see `late()`); empty for most files."""
        return late_names(self.content)

    def pieces(self) -> list[tuple[bool, str]]:
        """The content as (is_late, text-or-name) pieces, in order."""
        parts = LATE_MARK.split(self.content)
        return [(i % 2 == 1, p) for i, p in enumerate(parts) if p or i % 2 == 1]


@dataclass(frozen=True)
class Account:
    name: str
    gecos: str
    sudo: bool


@dataclass(frozen=True)
class DeriveStep:
    """A command the converge runs after swapping files and before reloading units: it derives a
    live file from a managed one (e.g. a zone with its serial). Output starting `changed` means
    `unit` must be reloaded."""

    description: str
    command: str
    """Shell code, a render.quote.Shell (the converge template pastes it as code)."""
    unit: str


@dataclass
class HostPlan:
    host: str
    files: list[ManagedFile] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    """Units that must be enabled and running."""
    people: list[Account] = field(default_factory=list)
    """Login accounts; people in PEOPLE_GROUP who are not listed here get locked."""
    derive: list[DeriveStep] = field(default_factory=list)
    absent: list[tuple[str, str]] = field(default_factory=list)
    """(path, unit): paths that must not exist (e.g. a package's default site), removed like a managed file."""
    prepare: list[str] = field(default_factory=list)
    """Shell run before the checks (things the checked config refers to, e.g. placeholder certificates)."""
    finish: list[str] = field(default_factory=list)
    """Shell run after the reloads (e.g. asking the ACME CA for certificates nginx now answers for)."""


BASE_PACKAGES = [
    "openssh-server",
    "sudo",
    "nftables",
    "prometheus-node-exporter",
    "unattended-upgrades",
    "systemd-timesyncd",
]
BASE_UNITS = ["ssh", "nftables", "prometheus-node-exporter", "systemd-timesyncd", "unattended-upgrades"]


def accounts(stack: Stack) -> list[Account]:
    admins = set(derive.sudoers(stack))
    return [Account(n, f"{n} (hypha-infra)", n in admins) for n in derive.login_people(stack)]


def deploy_key_line(stack: Stack, host: str) -> str:
    """The deploy key as an authorized_keys line, usable only from one address.

    `restrict` turns off forwarding, pty and agent; the gateway re-allows port forwarding because
    jumping through it (ssh -J, Pulumi's proxy connection) is a direct-tcpip forward.
    """
    options = [quote.authorized_keys_option("from", derive.deploy_key_source(stack, host)), "restrict"]
    if host == derive.gateway_name(stack):
        options.append("port-forwarding")
    return quote.authorized_keys_line(stack.access.deploy.public_key, options)


def jump_targets(stack: Stack) -> list[str]:
    """What a session on the bastion may open a channel to: each other host's SSH, by its LAN address
    (what `ssh -J` and the deploy's proxy connection ask for; derive.ssh_jump_command)."""
    gw = derive.gateway_name(stack)
    return [f"{h.lan_ip}:22" for name, h in sorted(stack.hosts.items()) if name != gw]


def access_files(stack: Stack, host: str) -> list[ManagedFile]:
    """Who may log in and as what: sshd drop-in, one root-owned key file per user, sudoers.

    cloud-init writes exactly these on first boot, so a fresh VM and a converged one agree.
    """
    people = accounts(stack)
    from model import backup

    # Service accounts that log in over SSH too (the borg target's `borg`, forced to `borg serve`).
    users = [a.name for a in people] + [derive.DEPLOY_USER] + backup.ssh_logins(stack, host)
    files = [
        ManagedFile(
            SSHD_DROPIN,
            render(
                "base/sshd-hypha.conf.j2",
                allow_users=users,
                forwarding="gateway" in stack.hosts[host].roles,
                permit_open=jump_targets(stack),
                min_rsa_bits=MIN_RSA_BITS,
            ),
            unit="ssh",
            check="sshd",
        ),
        ManagedFile(
            "/etc/sudoers.d/90-hypha",
            render("base/sudoers.j2", users=[a.name for a in people if a.sudo] + [derive.DEPLOY_USER]),
            mode="0440",
            check="sudoers",
        ),
    ]
    for a in people:
        keys = "".join(f"{quote.public_key(k)}\n" for k in stack.people[a.name].keys)
        files.append(ManagedFile(f"{AUTHORIZED_KEYS_DIR}/{a.name}", keys, check="authorized_keys"))
    files.append(
        ManagedFile(
            f"{AUTHORIZED_KEYS_DIR}/{derive.DEPLOY_USER}", deploy_key_line(stack, host) + "\n", check="authorized_keys"
        )
    )
    return files


def _base(stack: Stack, host: str, plan: HostPlan) -> None:
    h = stack.hosts[host]
    is_gateway = "gateway" in h.roles
    plan.files += access_files(stack, host)
    plan.files += [
        ManagedFile(
            "/etc/nftables.conf",
            render(
                "base/nftables.conf.j2",
                rules=derive.inbound_rules(stack, host),
                vpn=stack.network.vpn if is_gateway else None,
                lan_cidr=stack.network.lan_cidr,
                deploy_address=derive.deploy_address(stack) if is_gateway else None,
                deploy_user=derive.DEPLOY_USER,
            ),
            mode="0755",
            unit="nftables",
            check="nftables",
        ),
        ManagedFile(
            "/etc/default/prometheus-node-exporter",
            render("base/node-exporter.default.j2", listen=f"{h.lan_ip}:{derive.NODE_EXPORTER_PORT}"),
            unit="prometheus-node-exporter",
            action="restart",
            check="shell",
        ),
        ManagedFile(
            "/etc/systemd/journald.conf.d/50-hypha.conf",
            render("base/journald.conf.j2"),
            unit="systemd-journald",
            action="restart",
        ),
        ManagedFile(
            "/etc/systemd/timesyncd.conf.d/50-hypha.conf",
            render("base/timesyncd.conf.j2", ntp=NTP_SERVERS),
            unit="systemd-timesyncd",
            action="restart",
        ),
        ManagedFile("/etc/apt/apt.conf.d/52hypha-unattended-upgrades", render("base/auto-upgrades.conf.j2"), check="apt"),
        ManagedFile(SYSCTL_BASE, render("base/sysctl.conf.j2"), unit="systemd-sysctl", action="restart"),
        # Read at each login and module load: nothing to reload.
        ManagedFile("/etc/security/limits.d/90-hypha.conf", render("base/limits.conf.j2")),
        ManagedFile("/etc/modprobe.d/hypha-blacklist.conf", render("base/modprobe-blacklist.conf.j2")),
    ]
    plan.packages += BASE_PACKAGES
    plan.units += BASE_UNITS
    plan.people = accounts(stack)
    from . import hostkeys

    # The keys the program made (cloud-init wrote them before sshd first started); none made here.
    plan.files += hostkeys.host_key_files(host)
    plan.absent += [(path, "ssh") for path in hostkeys.unwanted_key_paths()]


DEPLOY_ADDRESS_UNIT = "hypha-deploy-address"
DEPLOY_ADDRESS_SCRIPT = "/usr/local/sbin/hypha-deploy-address"


def _gateway(stack: Stack, host: str, plan: HostPlan) -> None:
    vpn = stack.network.vpn
    plan.files += [
        ManagedFile(
            "/etc/wireguard/wg0.conf",
            render(
                "gateway/wg0.conf.j2",
                address=derive.vpn_address(stack),
                prefix=vpn.cidr.prefixlen,
                port=vpn.port,
                peers=derive.vpn_peers(stack),
            ),
            mode="0600",
            unit="wg-quick@wg0",
            check="wireguard",
        ),
        ManagedFile(
            "/etc/sysctl.d/90-hypha-forward.conf",
            render("gateway/sysctl-forward.conf.j2"),
            unit="systemd-sysctl",
            action="restart",
        ),
    ]
    # The deploy address (derive.deploy_address) on the LAN interface, before any LAN host's converge:
    # the gateway converges first (components/host_bootstrap.py), then the others through it.
    address = derive.deploy_address(stack)
    plan.files += [
        ManagedFile(
            DEPLOY_ADDRESS_SCRIPT,
            render("gateway/deploy-address.sh.j2", lan_ip=str(stack.hosts[host].lan_ip), address=address),
            mode="0755",
            unit=DEPLOY_ADDRESS_UNIT,
            action="restart",
            check="shell",
        ),
        ManagedFile(
            f"/etc/systemd/system/{DEPLOY_ADDRESS_UNIT}.service",
            render("gateway/deploy-address.service.j2", address=address, script=DEPLOY_ADDRESS_SCRIPT),
            unit=DEPLOY_ADDRESS_UNIT,
            action="restart",
        ),
    ]
    plan.packages += ["wireguard-tools"]
    plan.units += ["wg-quick@wg0", DEPLOY_ADDRESS_UNIT]


def _dns(stack: Stack, host: str, plan: HostPlan) -> None:
    from . import dns

    if stack.dns is None:
        return
    plan.files += dns.dns_files(stack, stack.dns)
    plan.packages += dns.PACKAGES
    plan.units += [dns.UNIT]
    zone = dns.zone_name(stack)
    plan.derive.append(
        DeriveStep(
            f"zone {zone}",
            quote.sh_join([dns.SERIAL_SCRIPT, dns.body_path(zone), dns.live_path(zone)]),
            dns.UNIT,
        )
    )


def _reverse_proxy(stack: Stack, host: str, plan: HostPlan) -> None:
    from . import proxy

    plan.files += proxy.proxy_files(stack)
    plan.packages += proxy.PACKAGES
    plan.units += [proxy.UNIT, proxy.RENEW_UNIT]
    plan.absent.append((proxy.DEBIAN_DEFAULT_SITE, proxy.UNIT))
    plan.prepare.append(proxy.placeholder_step(stack))
    plan.finish.append(proxy.certbot_step(stack))


def _backup_target(stack: Stack, host: str, plan: HostPlan) -> None:
    from . import backup

    backup.backup_target(stack, host, plan)


def _monitoring(stack: Stack, host: str, plan: HostPlan) -> None:
    from . import monitoring

    monitoring.monitoring(stack, host, plan)


ROLES = {
    "gateway": _gateway,
    "dns": _dns,
    "reverse_proxy": _reverse_proxy,
    "backup_target": _backup_target,
    "monitoring": _monitoring,
}


def host_plan(stack: Stack, host: str) -> HostPlan:
    """Everything `host` must hold, base role first, then its roles in sorted order."""
    plan = HostPlan(host)
    _base(stack, host, plan)
    for role in sorted(stack.hosts[host].roles):
        if role in ROLES:
            ROLES[role](stack, host, plan)
    # Not a role one picks: every host that holds data is a backup client.
    from . import backup

    backup.backup_client(stack, host, plan)
    paths = [f.path for f in plan.files]
    assert len(paths) == len(set(paths)), f"{host}: two roles render the same file"
    return plan
