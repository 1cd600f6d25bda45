"""Every host's SSH host keys: where they live, how cloud-init and the converge deliver them, and the pins.

The keys are made by the program (components/host_keys.py, `tls.PrivateKey`), never on the host:
cloud-init writes them on first boot (`ssh_keys:`, before sshd first starts), the converge keeps
them as managed files holding late values, and every client pins the Ed25519 public half.

Types: Ed25519, which every pin uses, and RSA 4096 only because ssh-audit's "Hardened Debian 12
(version 3)" policy lists `rsa-sha2-512` and `rsa-sha2-256` among the host keys a server must
offer (and has no `allow_hostkey_subset_and_reordering`), so a server with Ed25519 alone fails it.
"""

from __future__ import annotations

from typing import Mapping

from model import derive
from model.stack import Stack

from .plan import LateValue, ManagedFile, late
from .wire import late_token

ED25519, RSA = "ed25519", "rsa"
KEY_TYPES = (ED25519, RSA)
RSA_BITS = 4096
PIN_TYPE = ED25519
"""The key type every client pins (pulumi-command offers only the pinned key's type, see components/host_bootstrap.py)."""
# What the Debian 12 image or an earlier converge may have made; sshd must not offer them.
UNWANTED_TYPES = ("ecdsa", "dsa")


def key_path(kind: str) -> str:
    return f"/etc/ssh/ssh_host_{kind}_key"


def late_name(host: str, kind: str, half: str) -> str:
    """`hostkey/<host>/<kind>-private` or `-public`: the late value components/host_keys.py makes."""
    assert kind in KEY_TYPES and half in ("private", "public"), (kind, half)
    return f"hostkey/{host}/{kind}-{half}"


# The keys are components/host_keys.py's (its HostKeys component made them for cloud-init and the pins
# before any script): these kinds look them up there instead of making resources of their own.
LATE = tuple(
    LateValue(rf"hostkey/(?P<host>[^/]+)/(?P<type>{'|'.join(KEY_TYPES)})-{half}", f"host-key-{half}", parent="host-keys")
    for half in ("private", "public")
)


def host_key_files(host: str) -> list[ManagedFile]:
    """The host's key files as the converge manages them: the same bytes cloud-init wrote.

    Mode 0600 for the public halves too, because cloud-init's cc_ssh writes them so
    (CONFIG_KEY_TO_FILE in cloudinit/config/cc_ssh.py, 22.4.2): a first converge then finds nothing
    to change. A changed key reloads sshd (Debian's ssh.service sends SIGHUP; sshd re-executes and
    reads its host keys again), which keeps open sessions, the converge's own among them.
    """
    files = []
    for kind in KEY_TYPES:
        files.append(ManagedFile(key_path(kind), late(late_name(host, kind, "private")), mode="0600",
                                 unit="ssh", check="ssh_private_key"))
        files.append(ManagedFile(key_path(kind) + ".pub", late(late_name(host, kind, "public")), mode="0600",
                                 unit="ssh", check="authorized_keys"))
    return files


def unwanted_key_paths() -> list[str]:
    return [p for kind in UNWANTED_TYPES for p in (key_path(kind), key_path(kind) + ".pub")]


def cloud_init_keys(keys: Mapping[str, str]) -> dict[str, str]:
    """cloud-init's `ssh_keys:` mapping from {"ed25519-private": ..., "ed25519-public": ..., "rsa-...": ...}."""
    missing = [f"{k}-{h}" for k in KEY_TYPES for h in ("private", "public") if f"{k}-{h}" not in keys]
    if missing:
        raise KeyError(f"host keys missing: {', '.join(missing)}")
    return {f"{k}_{h}": keys[f"{k}-{h}"] for k in KEY_TYPES for h in ("private", "public")}


def pin(public_openssh: str) -> str:
    """`ssh-ed25519 AAAA…`: the public half without comment or newline, as a host_key / known_hosts key."""
    parts = public_openssh.split()
    if len(parts) < 2 or parts[0] != f"ssh-{PIN_TYPE}":
        raise ValueError(f"not an ssh-{PIN_TYPE} public key: {public_openssh[:40]!r}")
    return f"{parts[0]} {parts[1]}"


def addresses(stack: Stack, host: str) -> list[str]:
    """Every address a client reaches `host`'s sshd on: the bastion's public ones, then the LAN address."""
    h = stack.hosts[host]
    out = []
    if host == derive.gateway_name(stack):
        out += [str(a) for a in (h.public_ipv4, h.public_ipv6) if a]
    out.append(str(h.lan_ip))
    return out


def known_hosts(stack: Stack, pins: Mapping[str, str]) -> str:
    """OpenSSH known_hosts lines, one per host (all its addresses), sorted by host; `pins` by host name."""
    lines = []
    for host in sorted(stack.hosts):
        comment = f"hypha-{stack.site.stack}-{host}"
        lines.append(f"{','.join(addresses(stack, host))} {pin(pins[host])} {comment}")
    return "".join(f"{line}\n" for line in lines)


def rotation_script(host: str, generation: int) -> str:
    """What the one-off rotation command runs (as root, on stdin): the new keys in, checked, sshd reloaded.

    Late values stand where the keys go (`render.converge.fill` puts them in, base64). The same
    files are managed files of the converge, which then finds them current and changes nothing.
    """
    lines = [
        "#!/bin/sh",
        f"# hypha-infra: {host}'s SSH host keys, generation {generation} (render/hostkeys.py). Run as root.",
        "set -eu",
        "umask 077",
        "stage=$(mktemp -d /etc/ssh/hypha-host-keys.XXXXXX)",
        "trap 'rm -rf \"$stage\"' EXIT",
    ]
    names = []
    for kind in KEY_TYPES:
        for half, suffix in (("private", ""), ("public", ".pub")):
            name = key_path(kind).rsplit("/", 1)[1] + suffix
            names.append(name)
            lines.append(f"printf '%s' '{late_token(late_name(host, kind, half))}' | base64 -d >\"$stage/{name}\"")
    lines += [
        # A key sshd could not load must not replace one it can: check each pair and sshd with both.
        *(f"[ \"$(ssh-keygen -y -f \"$stage/{key_path(k).rsplit('/', 1)[1]}\" | cut -d' ' -f1-2)\" = "
          f"\"$(cut -d' ' -f1-2 \"$stage/{key_path(k).rsplit('/', 1)[1]}.pub\")\" ]" for k in KEY_TYPES),
        "mkdir -p /run/sshd",
        "sshd -t " + " ".join(f"-h \"$stage/{key_path(k).rsplit('/', 1)[1]}\"" for k in KEY_TYPES),
        f"for f in {' '.join(names)}; do",
        "\tchown root:root \"$stage/$f\" && chmod 0600 \"$stage/$f\" && mv -f \"$stage/$f\" \"/etc/ssh/$f\"",
        "done",
        # SIGHUP: sshd re-executes with the new keys; this session (and every open one) stays.
        "systemctl reload ssh",
        f"echo \"host keys of generation {generation} in place: $(ssh-keygen -l -f {key_path(PIN_TYPE)}.pub)\"",
    ]
    return "\n".join(lines) + "\n"
