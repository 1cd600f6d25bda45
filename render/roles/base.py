"""The base every host gets before its roles: who logs in and how, the firewall, node_exporter,
journald, time, unattended upgrades, kernel settings and the host's own SSH keys."""

from __future__ import annotations

from model import derive, derive_backup as backup
from model.keys import MIN_RSA_BITS
from model.stack import Stack

from .. import hostkeys, quote
from ..plan import Account, HostPlan, ManagedFile, Role
from ..templates import render

NAME = "base"
AUTHORIZED_KEYS_DIR = "/etc/ssh/authorized_keys"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-hypha.conf"
PEOPLE_GROUP = "hypha-people"
SYSCTL_BASE = "/etc/sysctl.d/80-hypha-base.conf"
LINGER_DIR = "/var/lib/systemd/linger"
NTP_SERVERS = ("0.debian.pool.ntp.org", "1.debian.pool.ntp.org", "2.debian.pool.ntp.org")


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


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """What every host holds: logins, sshd, firewall, node_exporter, journald, time, upgrades, sysctl."""
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
        # The deploy user lingers: logind keeps its user manager (user@UID.service) running between
        # logins instead of starting it for each one. pam_systemd's CreateSession waits for that
        # start (up to 2 minutes, LOGIN_SLOW_BUS_CALL_TIMEOUT_USEC), and sshd opens no channel until
        # then: on a loaded host every converge and drift check waited for it. logind asks for the
        # file each time (systemd src/login/logind-user.c, user_check_linger_file: access(F_OK) on
        # /var/lib/systemd/linger/<name>, from user_may_gc) and starts lingering users at boot
        # (logind.c, manager_enumerate_linger_users), so the file is the whole setting.
        ManagedFile(f"{LINGER_DIR}/{derive.DEPLOY_USER}", ""),
    ]
    plan.packages += BASE_PACKAGES
    plan.units += BASE_UNITS
    plan.people = accounts(stack)
    # The keys the program made (cloud-init wrote them before sshd first started); none made here.
    plan.files += hostkeys.host_key_files(host)
    plan.absent += [(path, "ssh") for path in hostkeys.unwanted_key_paths()]


ROLE = Role(
    NAME,
    contribute,
    late=hostkeys.LATE,
    bare_units=("prometheus-node-exporter.service", "unattended-upgrades.service", "nftables.service"),
    packages=tuple(BASE_PACKAGES),
)
