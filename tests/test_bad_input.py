"""The bad-input corpus: every broken config is refused with its key path and fix, before any resource exists.

Each case starts from the real prod (or staging) config and breaks one thing. A case passes only if the
program raises ConfigError, one problem names the exact key path with the expected words (the fix
included), and the mock engine recorded no resource at all.
"""

from __future__ import annotations

import base64
import copy
import functools
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from ops import mockrun
from model.errors import ConfigError, Problem
from model.load import ROOT, build_stack, read_stack_config

pytestmark = pytest.mark.program

Raw = dict[str, Any]

ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAQUXk1MUG3ydirK9sPba3FC5udyujITAlKkWTcOShuC alice@hypha.coop"
ED25519_BLOB = ALICE_KEY.split()[1]


@functools.lru_cache(maxsize=None)
def _stack_file(stack: str) -> Raw:
    return read_stack_config(stack)


def base_config(stack: str) -> Raw:
    """A private copy of the committed config, safe to break."""
    return copy.deepcopy(_stack_file(stack))


def refusal(stack: str, raw: Raw) -> ConfigError:
    """Run the program on `raw`; return the ConfigError after checking nothing was registered."""
    with pytest.raises(ConfigError) as caught:
        mockrun.run_stack(stack, raw=raw)
    assert mockrun.last_run is not None and mockrun.last_run.stack == stack
    assert mockrun.last_run.resources == [], "resources were registered before the config was refused"
    return caught.value


def problem_at(exc: ConfigError, path: str) -> list[Problem]:
    found = [p for p in exc.problems if p.path == path]
    assert found, f"no problem at {path!r}; got:\n{exc}"
    return found


def assert_reported(exc: ConfigError, path: str, words: tuple[str, ...]) -> None:
    messages = [p.message for p in problem_at(exc, path)]
    assert any(all(w in m for w in words) for m in messages), f"{path}: expected {words} in one of {messages}"


# --- keys built at test time ---------------------------------------------------------------------


def openssh_line(public_key, comment: str) -> str:
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


def weak_rsa_key() -> str:
    return openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(), "weak@hypha.coop")


def openssh_private_key() -> str:
    """What `cat ~/.ssh/id_ed25519` prints: the private half a person may paste by mistake."""
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def dkim_private_key_base64() -> str:
    """The DKIM signing key's DER as base64: what a p= value would look like if the wrong half were pasted."""
    der = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return base64.b64encode(der).decode()


def dsa_key() -> str:
    with warnings.catch_warnings():
        # cryptography deprecates DSA for SSH; we need one exactly to show it is refused.
        warnings.simplefilter("ignore")
        return openssh_line(dsa.generate_private_key(key_size=1024).public_key(), "old@hypha.coop")


# --- mutations -----------------------------------------------------------------------------------


def _walk(raw: Raw, dotted: str) -> tuple[Any, str]:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, last


def setting(dotted: str, value: Any) -> Callable[[Raw], None]:
    """Set one value, e.g. setting("hosts.bw1.lan_ip", "10.0.2.4"); list items by index (`keys.0`)."""

    def mutate(raw: Raw) -> None:
        node, last = _walk(raw, dotted)
        value_now = value() if callable(value) else value
        if isinstance(node, list):
            node[int(last)] = value_now
        else:
            node[last] = value_now

    return mutate


def deleting(dotted: str) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        node, last = _walk(raw, dotted)
        del node[last]

    return mutate


def both(*mutations: Callable[[Raw], None]) -> Callable[[Raw], None]:
    def mutate(raw: Raw) -> None:
        for m in mutations:
            m(raw)

    return mutate


def case(id_: str, mutate, path: str, *words: str, stack: str = "prod"):
    return pytest.param(stack, mutate, path, words, id=id_)


CASES = [
    # SSH keys: each one a person could paste by mistake.
    case(
        "garbage-base64-key",
        setting("people.alice.keys.0", "ssh-ed25519 AAAA%%%not-base64%%% alice@hypha.coop"),
        "people.alice.keys[0]",
        "base64 data is malformed",
        "paste the .pub file line unchanged",
    ),
    case(
        "key-type-word-does-not-match-its-data",
        setting("people.bob.keys.0", f"ssh-rsa {ED25519_BLOB} bob@hypha.coop"),
        "people.bob.keys[0]",
        "key says 'ssh-rsa' but its data is a 'ssh-ed25519' key",
        "paste the .pub file line unchanged",
    ),
    case(
        "key-with-trailing-newline",
        setting("people.alice.keys.0", ALICE_KEY + "\n"),
        "people.alice.keys[0]",
        "line break",
        "paste it as one line",
    ),
    case(
        "second-key-of-a-person-is-bad",
        setting("people.erin.keys.1", "ssh-ed25519 AAAA"),
        "people.erin.keys[1]",
        "truncated",
    ),
    case(
        "rsa-2048-key",
        setting("people.carol.keys.0", weak_rsa_key),
        "people.carol.keys[0]",
        "RSA key of 2048 bits is too weak (minimum 3072)",
        "ssh-keygen -t ed25519",
    ),
    case(
        "dsa-key",
        setting("people.carol.keys.0", dsa_key),
        "people.carol.keys[0]",
        "DSA keys are insecure",
        "ssh-keygen -t ed25519",
    ),
    case(
        "dsa-deploy-key",
        setting("access.deploy.public_key", dsa_key),
        "access.deploy.public_key",
        "DSA keys are insecure",
        "ssh-keygen -t ed25519",
    ),
    # Uniqueness.
    case(
        "duplicate-vm-id",
        setting("hosts.bw1.vm_id", 1001),
        "hosts.bw1.vm_id",
        "1001 is already used by hosts.web1",
        "pick a free id",
    ),
    case(
        "duplicate-lan-ip",
        setting("hosts.bw1.lan_ip", "10.0.1.11"),
        "hosts.bw1.lan_ip",
        "10.0.1.11 is already used by hosts.web1.lan_ip",
        "pick a free address",
    ),
    case(
        "duplicate-public-ipv4",
        setting("hosts.dns.public_ipv4", "203.0.113.11"),
        "hosts.dns.public_ipv4",
        "203.0.113.11 is already used by hosts.web1.public_ipv4",
    ),
    # Addresses.
    case(
        "lan-ip-outside-lan",
        setting("hosts.bw1.lan_ip", "10.0.2.4"),
        "hosts.bw1.lan_ip",
        "10.0.2.4 is outside network.lan_cidr 10.0.1.0/24",
        "pick an address in 10.0.1.0/24",
    ),
    case(
        "public-ipv4-outside-public-cidr",
        setting("hosts.web1.public_ipv4", "198.51.100.11"),
        "hosts.web1.public_ipv4",
        "198.51.100.11 is outside network.public.ipv4_cidr 203.0.113.0/24",
        "pick an address in 203.0.113.0/24",
    ),
    case(
        "public-ipv4-on-staging",
        setting("hosts.web1.public_ipv4", "203.0.113.11"),
        "hosts.web1.public_ipv4",
        "this stack has no network.public",
        "remove the address or add network.public",
        stack="staging",
    ),
    # References.
    case(
        "service-on-unknown-host",
        setting("services.link.host", "bw2"),
        "services.link.host",
        "unknown host 'bw2'",
        "known hosts: backup1, bw1, dns",
    ),
    case(
        "admin-who-is-not-a-person",
        setting("access.admins", ["alice", "zoe"]),
        "access.admins[1]",
        "'zoe' is not a defined person",
        "add people.zoe or remove the entry",
    ),
    case(
        "member-who-is-not-a-person",
        setting("access.members", ["dave", "zoe"]),
        "access.members[1]",
        "'zoe' is not a defined person",
        "add people.zoe or remove the entry",
    ),
    case(
        "unknown-role-on-host",
        setting("hosts.bw1.roles", ["web", "wiki"]),
        "hosts.bw1.roles[1]",
        "unknown role 'wiki'",
        "known roles: gateway, reverse_proxy",
    ),
    case(
        "host-on-unknown-node",
        setting("hosts.bw1.node", "kvm2"),
        "hosts.bw1.node",
        "unknown node 'kvm2'",
        "known nodes: kvm1",
    ),
    case(
        "template-on-unknown-node",
        setting("proxmox.template.node", "kvm2"),
        "proxmox.template.node",
        "unknown node 'kvm2'",
        "known nodes: kvm1",
    ),
    # Capacity of the node: 12 threads x 2 = 24 vCPUs, 64 GiB - 20 GiB reserved, 420 GiB NVMe.
    case(
        "memory-over-node-capacity",
        setting("hosts.loomio.memory_mb", 40000),
        "proxmox.nodes.kvm1",
        "ask for 50240 MiB RAM but it offers 45056 MiB",
        "hosts.loomio.memory_mb 40000",
        "move or shrink hosts",
    ),
    case(
        "vcpus-over-node-capacity",
        setting("hosts.loomio.cores", 12),
        "proxmox.nodes.kvm1",
        "ask for 26 vCPUs but it offers 24",
        "move or shrink hosts",
    ),
    case(
        "disk-over-storage-pool",
        setting("hosts.loomio.disk_gb", 300),
        "proxmox.nodes.kvm1.storage.local-nvme",
        "ask for 440 GiB but it has 420 GiB",
        "move or shrink disks",
    ),
    case(
        "vm-with-more-cores-than-node-threads",
        setting("hosts.loomio.cores", 16),
        "hosts.loomio.cores",
        "16 is more than node 'kvm1' has (12 threads)",
        "give it at most 12",
    ),
    # VM ids.
    case(
        "vm-id-outside-stack-range",
        setting("hosts.bw1.vm_id", 8003),
        "hosts.bw1.vm_id",
        "8003 is outside this stack's range site.vm_ids 1000-1999",
        "pick a free id in that range",
    ),
    # Domain names.
    case(
        "upper-case-domain",
        setting("site.domain", "Hypha.coop"),
        "site.domain",
        "'Hypha.coop' is not a valid domain name",
        "write it lower-case",
    ),
    case(
        "domain-with-trailing-dot",
        setting("services.www.domains.1", "www.hypha.coop."),
        "services.www.domains[1]",
        "'www.hypha.coop.' is not a valid domain name",
        "no trailing dot",
    ),
    case(
        "domain-label-with-underscore",
        setting("services.link.domains.0", "link_short.hypha.coop"),
        "services.link.domains[0]",
        "'link_short.hypha.coop' is not a valid domain name",
        "not starting or ending with a hyphen",
    ),
    case(
        "domain-label-starting-with-hyphen",
        setting("services.link.domains.0", "-link.hypha.coop"),
        "services.link.domains[0]",
        "'-link.hypha.coop' is not a valid domain name",
        "not starting or ending with a hyphen",
    ),
    case(
        "single-label-domain",
        setting("site.domain", "hypha"),
        "site.domain",
        "'hypha' is not a valid domain name",
        "at least two labels, e.g. hypha.coop",
    ),
    # Who may log in on prod.
    case(
        "one-prod-admin",
        setting("access.admins", ["alice"]),
        "access.admins",
        "has 1 admin(s) where only admins log in",
        "name 2 or 3",
    ),
    case(
        "four-prod-admins",
        both(
            setting("people.dave.roles", ["admin", "member"]),
            setting("access.admins", ["alice", "bob", "carol", "dave"]),
        ),
        "access.admins",
        "has 4 admin(s) where only admins log in",
        "name 2 or 3",
    ),
    case(
        "admin-without-admin-role",
        setting("access.admins", ["alice", "dave"]),
        "access.admins[1]",
        "'dave' does not have the admin role",
        "add `admin` to people.dave.roles",
    ),
    # Shape of the config.
    case(
        "typo-in-a-section-key",
        setting("site.domian", "hypha.coop"),
        "site.domian",
        "is not a known key",
        "check its spelling",
    ),
    case(
        "typo-in-a-host-key",
        setting("hosts.bw1.memmory_mb", 2048),
        "hosts.bw1.memmory_mb",
        "is not a known key",
        "check its spelling",
    ),
    case(
        "missing-required-key",
        deleting("site.domain"),
        "site.domain",
        "is required",
        "add it",
    ),
    case(
        "missing-required-host-key",
        deleting("hosts.bw1.lan_ip"),
        "hosts.bw1.lan_ip",
        "is required",
        "add it",
    ),
    case(
        "missing-required-section",
        deleting("network"),
        "network",
        "is required",
        "add the section",
    ),
    case(
        "site-stack-does-not-match",
        setting("site.stack", "staging"),
        "site.stack",
        "is 'staging' but this is stack 'prod'",
        "set it to 'prod'",
    ),
    # The web edge's catalog.
    case(
        "public-services-without-tls",
        deleting("tls"),
        "tls",
        "is required when a service is public",
        "add the section",
    ),
    case(
        "acme-directory-not-https",
        setting("tls.acme_directory", "http://acme.example.org/directory"),
        "tls.acme_directory",
        "is not an https:// ACME directory URL",
    ),
    case(
        "shortlinks-with-a-port",
        setting("services.link.port", 8081),
        "services.link.port",
        "served by the proxy itself; remove the port",
    ),
    case(
        "a-public-service-limited-to-the-vpn",
        setting("services.loomio.reach", "vpn"),
        "services.loomio.reach",
        "reached through the reverse proxy",
    ),
    case(
        "a-vpn-only-service-without-a-port",
        both(setting("services.www.public", False), setting("services.www.reach", "vpn"), setting("services.www.port", None)),
        "services.www.reach",
        "only a service with a port",
    ),
    case(
        "reach-is-neither-lan-nor-vpn",
        setting("services.prometheus.reach", "internet"),
        "services.prometheus.reach",
        "'lan' or 'vpn'",
    ),
    case(
        "shortlinks-on-a-host-without-the-proxy",
        setting("services.link.host", "bw1"),
        "services.link.host",
        "has no `reverse_proxy` role",
    ),
    case(
        "mx-to-an-unknown-host",
        setting("dns.mx.0.host", "mail9"),
        "dns.mx[0].host",
        "unknown host 'mail9'",
    ),
    # --- hostile values: what an attacker with push rights would try (issue 11) -----------------
    # Shell metacharacters where a value reaches a shell, a unit or a key file.
    case("email-with-a-shell-command", setting("tls.email", "hostmaster@hypha.coop;touch /tmp/x;"),
         "tls.email", "is not an email address", "name@example.org"),
    case("acme-directory-with-command-substitution", setting("tls.acme_directory", "https://acme.example.org/dir$(touch${IFS}/tmp/x)"),
         "tls.acme_directory", "is not an https:// ACME directory URL", "remove it"),
    case("repository-dir-with-a-command", setting("backup.repository_dir", "/srv/borg;touch${IFS}/tmp/x"),
         "backup.repository_dir", "is not a normalised path of safe characters", "e.g. /srv/loomio"),
    case("offsite-host-with-a-newline-and-a-wildcard", setting("backup.offsite.host", "borg.example.net\n*"),
         "backup.offsite.host", "control character '\\n'", "remove it"),
    case("offsite-user-with-a-semicolon", setting("backup.offsite.user", "hypha;id"),
         "backup.offsite.user", "is not a user name", "letters, digits"),
    case("offsite-path-with-a-space", setting("backup.offsite.path", "/srv/hypha borg"),
         "backup.offsite.path", "safe characters", "no spaces"),
    case("vpn-endpoint-with-command-substitution", setting("network.vpn.endpoint", "$(reboot):51820"),
         "network.vpn.endpoint", "is not host:port", "e.g. smtp.example.org:587"),
    case("search-domain-with-a-trailing-newline", setting("network.search_domain", "prod.hypha.coop\n"),
         "network.search_domain", "control character", "remove it"),
    case("person-email-with-a-pipe", setting("people.alice.email", "alice|mail@hypha.coop"),
         "people.alice.email", "is not an email address", "name@example.org"),
    case("alert-sender-with-a-nul", setting("monitoring.email.sender", "alerts@hypha.coop\x00"),
         "monitoring.email.sender", "control character '\\x00'", "remove it"),
    case("smtp-username-with-a-dollar", setting("monitoring.email.username", "$(id)"),
         "monitoring.email.username", "is not a login", "letters, digits"),
    case("pool-with-a-space", setting("proxmox.pool", "hypha prod"),
         "proxmox.pool", "is not a Proxmox pool id", "letters, digits, . _ and -"),
    case("ssh-user-with-a-semicolon", setting("proxmox.ssh_user", "root;id"),
         "proxmox.ssh_user", "is not a user name", "lower-case letters"),
    case("bridge-name-longer-than-linux-allows", setting("proxmox.nodes.kvm1.bridges.0", "vmbr0-public-uplink"),
         "proxmox.nodes.kvm1.bridges[0]", "is not a Linux bridge name", "1-15"),
    case("storage-id-against-proxmox-rules", setting("proxmox.default_datastore", "local nvme"),
         "proxmox.default_datastore", "is not a Proxmox storage id", "e.g. local-nvme"),
    case("tag-against-proxmox-rules", setting("site.tags", ["hypha;prod"]),
         "site.tags[0]", "is not a Proxmox tag", "lower-case letters"),
    case("data-path-climbing-out", setting("services.www.data_paths", ["/srv/www/../../etc"]),
         "services.www.data_paths[0]", "no . or .. parts", "e.g. /srv/loomio"),
    case("health-path-with-a-command", setting("services.loomio.health_path", "/x;reboot"),
         "services.loomio.health_path", "is not an HTTP path", "e.g. /healthz"),
    case("database-name-with-a-quote", setting("services.loomio.databases.0.name", "loomio'; drop"),
         "services.loomio.databases[0].name", "is not a database name", "letters, digits"),
    # systemd calendar events, checked by systemd-analyze.
    case("schedule-that-systemd-cannot-parse", setting("backup.schedule", "banana"),
         "backup.schedule", "systemd-analyze calendar", "e.g. *-*-* 01:15"),
    case("schedule-in-12-hour-form", setting("backup.prune_schedule", "1:15am"),
         "backup.prune_schedule", "is not a systemd calendar event", "e.g. *-*-* 01:15"),
    case("schedule-with-a-trailing-newline", setting("backup.offsite.schedule", "*-*-* 05:00\n"),
         "backup.offsite.schedule", "control character '\\n'", "remove it"),
    case("schedule-with-an-extra-unit-line", setting("backup.drill_schedule", "*-*-* 06:30\nExecStartPre=/bin/sh"),
         "backup.drill_schedule", "control character", "remove it"),
    # Control characters anywhere: tab, DEL, a C1 control.
    case("domain-with-a-tab", setting("site.domain", "hypha.coop\t"),
         "site.domain", "control character '\\t'"),
    case("tag-with-a-del", setting("site.tags", ["prod\x7f"]),
         "site.tags[0]", "control character"),
    case("key-comment-with-a-c1-control", setting("people.alice.keys.0", ALICE_KEY.replace("alice@", "alice\x85@")),
         "people.alice.keys[0]", "control character", "paste the .pub file line unchanged"),
    # Numbers and booleans: strict, never coerced.
    case("port-given-as-a-boolean", setting("services.www.port", True),
         "services.www.port", "True is a boolean, not a number", "write a whole number"),
    case("port-given-as-text", setting("services.www.port", "8080"),
         "services.www.port", "is text, not a number", "without quotes"),
    case("address-given-as-an-integer", setting("access.deploy.source", 0),
         "access.deploy.source", "0 is a number, not an IPv4 address", "write it as text in quotes"),
    case("lan-ip-given-as-an-integer", setting("hosts.bw1.lan_ip", 167772429),
         "hosts.bw1.lan_ip", "is a number, not an IPv4 address"),
    # Found by the injection test: Python keeps an IPv6 zone (`%...`) as free text on the address.
    case("ipv6-address-with-a-shell-zone", setting("hosts.web1.public_ipv6", "2001:db8:1::11%n${IFS}&&touch${IFS}x"),
         "hosts.web1.public_ipv6", "it has a zone (%...)", "write the address without it"),
    case("ipv6-gateway-with-a-zone", setting("network.public.ipv6_gateway", "2001:db8:1::1%eth0"),
         "network.public.ipv6_gateway", "it has a zone (%...)"),
    case("boolean-given-as-yes", setting("site.on_boot", "yes"),
         "site.on_boot", "'yes' is text, not a boolean", "write true or false"),
    case("vcpu-ratio-infinite", setting("proxmox.nodes.kvm1.vcpu_ratio", float("inf")),
         "proxmox.nodes.kvm1.vcpu_ratio", "the number inf is out of range"),
    case("vm-id-1e308", setting("hosts.bw1.vm_id", 1e308),
         "hosts.bw1.vm_id", "the number 1e+308 is out of range", "correct it"),
    case("memory-as-a-fraction", setting("hosts.bw1.memory_mb", 1024.5),
         "hosts.bw1.memory_mb", "is not a whole number"),
    # Lists that must not repeat.
    case("role-listed-twice", setting("hosts.bw1.roles", ["web", "web"]),
         "hosts.bw1.roles", "'web' is listed twice", "remove the duplicate"),
    case("person-role-listed-twice", setting("people.alice.roles", ["admin", "admin"]),
         "people.alice.roles", "'admin' is listed twice", "remove the duplicate"),
    case("dkim-key-of-an-unknown-algorithm",
         setting("dns.dkim", [{"selector": "mail2026", "public_key": ED25519_BLOB, "key_type": "dsa"}]),
         "dns.dkim[0].key_type", "'rsa' or 'ed25519'"),
    # Ports that the host's own daemons hold.
    case("service-on-the-ssh-port", setting("services.www.port", 22),
         "services.www.port", "22 on bw1 is already held by sshd", "pick another port"),
    case("service-on-node-exporters-port", setting("services.loomio.port", 9100),
         "services.loomio.port", "held by node_exporter", "pick another port"),
    case("service-on-the-proxy-hosts-443", both(setting("services.www.host", "web1"), setting("services.www.port", 443)),
         "services.www.port", "443 on web1 is already held by the reverse_proxy role", "pick another port"),
    case("service-on-the-dns-hosts-53", both(setting("services.www.host", "dns"), setting("services.www.port", 53)),
         "services.www.port", "held by the dns role", "pick another port"),
    case("service-on-the-blackbox-exporters-port", setting("services.alertmanager.port", 9115),
         "services.alertmanager.port", "held by blackbox_exporter", "pick another port"),
    case("service-on-the-mail-hosts-exporter-port", setting("services.lists.port", 9154),
         "services.lists.port", "9154 on lists is already held by postfix exporter (the mail role)", "pick another port"),
    case("service-on-opendkims-loopback-port", setting("services.lists.port", 8891),
         "services.lists.port", "8891 on lists is already held by opendkim (the mail role)", "pick another port"),
    case("service-on-the-proxys-mtail-port", both(setting("services.www.host", "web1"), setting("services.www.port", 3903)),
         "services.www.port", "3903 on web1 is already held by mtail (the reverse_proxy role)", "pick another port"),
    # Hosts that take no service.
    case("service-on-the-bastion", setting("services.www.host", "gateway"),
         "services.www.host", "gateway is the SSH bastion and VPN gateway", "move it to another host"),
    case("service-on-the-backup-target", setting("services.loomio.host", "backup1"),
         "services.loomio.host", "backup1 is the backup target", "move it to another host"),
    # The public network's reserved addresses.
    case("public-ipv4-is-the-gateway", setting("hosts.web1.public_ipv4", "203.0.113.1"),
         "hosts.web1.public_ipv4", "203.0.113.1 is the public network's gateway", "pick another address in 203.0.113.0/24"),
    case("public-ipv4-is-the-network-address", setting("hosts.web1.public_ipv4", "203.0.113.0"),
         "hosts.web1.public_ipv4", "is the network address of 203.0.113.0/24", "pick another address"),
    case("public-ipv4-is-the-broadcast-address", setting("hosts.web1.public_ipv4", "203.0.113.255"),
         "hosts.web1.public_ipv4", "is the broadcast address of 203.0.113.0/24", "pick another address"),
    case("public-ipv6-is-the-gateway", setting("hosts.web1.public_ipv6", "2001:db8:1::1"),
         "hosts.web1.public_ipv6", "is the public network's gateway", "pick another address in 2001:db8:1::/64"),
    case("public-ipv6-is-the-subnet-router-anycast", setting("hosts.web1.public_ipv6", "2001:db8:1::"),
         "hosts.web1.public_ipv6", "Subnet-Router anycast address", "pick another address"),
    case("public-ipv6-is-a-reserved-subnet-anycast", setting("hosts.web1.public_ipv6", "2001:db8:1::ffff:ffff:ffff:ffff"),
         "hosts.web1.public_ipv6", "reserved subnet anycast", "pick another address"),
    # A domain outside the zone the stack serves.
    case("service-domain-outside-the-zone", setting("services.www.domains.1", "www.example.org"),
         "services.www.domains[1]", "www.example.org is outside the zone this stack serves (hypha.coop)",
         "use a name under hypha.coop"),
    case("service-domain-of-the-other-stack", setting("services.link.domains.0", "link.hypha.coop"),
         "services.link.domains[0]", "outside the zone this stack serves (staging.hypha.coop)", stack="staging"),
    # Monitoring and TLS values that land in Prometheus, Alertmanager and certbot files.
    case("prometheus-duration-with-a-newline", setting("monitoring.scrape_interval", "30s\n"),
         "monitoring.scrape_interval", "control character", "remove it"),
    case("prometheus-duration-of-zero", setting("monitoring.repeat_interval", "0s"),
         "monitoring.repeat_interval", "is not a duration such as 30s", "above zero"),
    case("alert-wait-for-an-alert-that-does-not-exist", setting("monitoring.alert_waits", {"MemoryPresure": "10m"}),
         "monitoring.alert_waits.MemoryPresure.[key]", "is not one of the stack's alerts", "MemoryPressure"),
    case("alert-wait-that-is-not-a-duration", setting("monitoring.alert_waits", {"MemoryPressure": "5 minutes"}),
         "monitoring.alert_waits.MemoryPressure", "is not a duration such as 30s", "above zero"),
    case("alert-wait-with-a-newline-into-the-rules-file", setting("monitoring.alert_waits", {"MemoryPressure": "5m\n      expr: vector(1)"}),
         "monitoring.alert_waits.MemoryPressure", "control character", "remove it"),
    case("webhook-url-with-command-substitution", setting("monitoring.matrix", {"url": "https://hook.example.org/$(id)"}),
         "monitoring.matrix.url", "is not an https:// or http:// URL", "remove it"),
    case("pve-exporter-user-without-a-realm", setting("monitoring.pve_exporter.user", "prometheus"),
         "monitoring.pve_exporter.user", "is not a Proxmox user id", "prometheus@pve"),
    case("proxmox-endpoint-with-a-path", setting("proxmox.endpoint", "https://kvm1.hypha.coop:8006/api2/json"),
         "proxmox.endpoint", "is not an https:// API address", "no path"),
    case("ca-bundle-that-is-not-pem", setting("tls.ca_bundle", "-----BEGIN CERTIFICATE-----\nMIIB$(id)\n-----END CERTIFICATE-----\n"),
         "tls.ca_bundle", "is not PEM certificates", "paste the CA file unchanged"),
    case("private-key-as-the-ca-bundle", setting("tls.ca_bundle", openssh_private_key),
         "tls.ca_bundle", "PRIVATE key", "now exposed", "rotate it"),
    case("resolver-given-as-an-integer", setting("network.resolvers", [0]),
         "network.resolvers[0]", "0 is a number, not an IP address", "write it as text in quotes"),
    # A private key pasted where a public key belongs: exposed, so rotated.
    case("private-key-as-a-persons-key", setting("people.alice.keys.0", openssh_private_key),
         "people.alice.keys[0]", "PRIVATE key", "now exposed", "rotate it"),
    case("private-key-as-the-deploy-key", setting("access.deploy.public_key", openssh_private_key),
         "access.deploy.public_key", "PRIVATE key", "now exposed", "rotate it"),
    case("private-key-as-the-offsite-host-key", setting("backup.offsite.host_key", openssh_private_key),
         "backup.offsite.host_key", "PRIVATE key", "now exposed", "rotate it"),
    case("wireguard-private-key-line-as-the-peer-key",
         setting("people.bob.wireguard.public_key", "PrivateKey = YNRgMezix5ttTKHgs2CzvN2nVfahl/osiTI11tmebEM="),
         "people.bob.wireguard.public_key", "PRIVATE key", "now exposed", "rotate it"),
    case("dkim-private-key-as-the-p-value",
         setting("dns.dkim", lambda: [{"selector": "mail2026", "public_key": dkim_private_key_base64()}]),
         "dns.dkim[0].public_key", "PRIVATE key", "now exposed", "rotate it"),
]


@pytest.mark.parametrize("stack, mutate, path, words", CASES)
def test_bad_config_is_refused_with_its_key_path_and_fix_before_any_resource(stack, mutate, path, words):
    raw = base_config(stack)
    mutate(raw)
    exc = refusal(stack, raw)
    assert_reported(exc, path, words)


# --- named spec tests (the headline cases, readable on their own) --------------------------------


def test_lan_ip_outside_the_lan_is_refused_with_its_key_path():
    raw = base_config("prod")
    raw["hosts"]["bw1"]["lan_ip"] = "10.0.2.4"
    exc = refusal("prod", raw)
    assert "hosts.bw1.lan_ip: 10.0.2.4 is outside network.lan_cidr 10.0.1.0/24" in str(exc)


def test_several_unrelated_problems_are_all_reported_in_one_error():
    raw = base_config("prod")
    raw["people"]["alice"]["keys"][0] = "ssh-ed25519 AAAA%%%not-base64%%%"
    raw["hosts"]["bw1"]["vm_id"] = 1001
    raw["services"]["link"]["host"] = "bw2"
    raw["hosts"]["web1"]["lan_ip"] = "10.0.2.4"
    exc = refusal("prod", raw)
    paths = {p.path for p in exc.problems}
    assert {"people.alice.keys[0]", "hosts.bw1.vm_id", "services.link.host", "hosts.web1.lan_ip"} <= paths
    assert f"{len(exc.problems)} problem(s)" in str(exc)


def test_the_error_lists_every_problem_as_path_colon_message():
    raw = base_config("prod")
    raw["hosts"]["bw1"]["vm_id"] = 1001
    raw["site"]["stack"] = "staging"
    exc = refusal("prod", raw)
    text = str(exc)
    assert len(exc.problems) >= 2
    assert "nothing was deployed" in text
    for p in exc.problems:
        assert f"  - {p.path}: {p.message}" in text.splitlines()


def test_a_host_name_given_twice_in_a_stack_file_is_refused_naming_both_lines(tmp_path: Path):
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    lines = (ROOT / "Pulumi.prod.yaml").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("bw1:"))
    # A second bw1 right after the first, as a copy-paste would leave it; PyYAML alone would keep the last.
    lines.insert(first + 1, lines[first].replace("10.0.1.13", "10.0.1.19").replace("1003", "1009"))
    (tmp_path / "Pulumi.prod.yaml").write_text("\n".join(lines) + "\n")

    with pytest.raises(ConfigError) as caught:
        read_stack_config("prod", root=tmp_path)
    (problem,) = caught.value.problems
    assert problem.path == f"Pulumi.prod.yaml:{first + 2}"
    assert f"'bw1' is defined twice (lines {first + 1} and {first + 2}); remove one" in problem.message
    assert "remove one" in problem.message

    # The program never starts on such a file: the loader refuses it before the run is set up.
    mockrun.last_run = None
    with pytest.raises(ConfigError):
        mockrun.run_stack("prod", root=tmp_path)
    assert mockrun.last_run is None


def test_an_unknown_top_level_section_is_refused_by_the_loader():
    raw = base_config("prod")
    raw["hsots"] = {"bw9": {"vm_id": 1009}}
    with pytest.raises(ConfigError) as caught:
        build_stack(raw, "prod")
    assert_reported(caught.value, "hypha-infra:hsots", ("is not a known config section", "(known: site, proxmox"))


def test_an_unknown_top_level_section_is_refused_by_the_program():
    raw = base_config("prod")
    raw["hsots"] = {"bw9": {"vm_id": 1009}}
    exc = refusal("prod", raw)
    assert_reported(exc, "hypha-infra:hsots", ("is not a known config section",))


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_the_committed_config_is_valid_so_the_corpus_means_something(stack):
    run = mockrun.run_stack(stack, raw=base_config(stack))
    assert run.resources, "a valid config must register resources"
