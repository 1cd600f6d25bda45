"""The bad-input corpus: every broken config is refused with its key path and fix, before any resource exists.

Each case starts from the real prod (or staging) config and breaks one thing. A case passes only if the
program raises ConfigError, one problem names the exact key path with the expected words (the fix
included), and the mock engine recorded no resource at all.
"""

from __future__ import annotations

import copy
import functools
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from ops import mockrun
from spec.errors import ConfigError, Problem
from spec.load import ROOT, build_stack, read_stack_config

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
