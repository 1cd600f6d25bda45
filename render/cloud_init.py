"""Cloud-init user-data for one VM: who may log in, the sshd lock-down drop-in, the guest agent."""

from __future__ import annotations

from dataclasses import dataclass

from spec import derive
from spec.model import Stack

from .templates import render

# Sorts before cloud-init's own 50-cloud-init.conf; sshd keeps the first value it reads.
SSHD_DROPIN_PATH = "/etc/ssh/sshd_config.d/10-hypha-access.conf"
SUDO_NOPASSWD = "ALL=(ALL) NOPASSWD:ALL"


@dataclass(frozen=True)
class User:
    name: str
    gecos: str
    keys: tuple[str, ...]
    groups: tuple[str, ...] = ()
    sudo: str = ""


def deploy_key_line(stack: Stack, host: str) -> str:
    """The deploy key as an authorized_keys line, usable only from one address.

    `restrict` turns off forwarding, pty and agent; the gateway re-allows port forwarding because
    jumping through it (ssh -J, Pulumi's proxy connection) is a direct-tcpip forward.
    """
    options = [f'from="{derive.deploy_key_source(stack, host)}"', "restrict"]
    if host == derive.gateway_name(stack):
        options.append("port-forwarding")
    return f"{','.join(options)} {stack.access.deploy.public_key}"


def users(stack: Stack, host: str) -> list[User]:
    admins = set(derive.sudoers(stack))
    out = [
        User(
            name=name,
            gecos=f"{name} (hypha-infra)",
            keys=tuple(stack.people[name].keys),
            groups=("sudo",) if name in admins else (),
            sudo=SUDO_NOPASSWD if name in admins else "",
        )
        for name in derive.login_people(stack)
    ]
    out.append(
        User(
            name=derive.DEPLOY_USER,
            gecos="deploy (hypha-infra converge)",
            keys=(deploy_key_line(stack, host),),
            sudo=SUDO_NOPASSWD,
        )
    )
    return out


def sshd_dropin(stack: Stack, host: str) -> str:
    return render("base/sshd-access.conf.j2", allow_users=[u.name for u in users(stack, host)])


def user_data(stack: Stack, host: str) -> str:
    """The #cloud-config document for `host`. Pure: same stack in, same bytes out."""
    return render(
        "base/user-data.yaml.j2",
        host=host,
        fqdn=f"{host}.{stack.network.search_domain or stack.site.domain}",
        users=[
            {"name": u.name, "gecos": u.gecos, "keys": list(u.keys), "groups": list(u.groups), "sudo": u.sudo}
            for u in users(stack, host)
        ],
        sshd_dropin_path=SSHD_DROPIN_PATH,
        sshd_dropin=sshd_dropin(stack, host),
    )
