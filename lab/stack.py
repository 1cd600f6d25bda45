"""The stack a lab is converged with: a real stack file's settings with the lab's own hosts, addresses and keys.

Everything else (roles, templates, access rules, firewall logic) is the real program's, so what the
lab proves is what production runs.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import copy
import datetime
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from model import derive
from model.load import build_stack, read_stack_config
from model.stack import Stack
from ops.remote import LATE, PINS, Pins, converge
from render import cloud_init, hostkeys
from render.converge import converge_script, fill

from .hosts import Lab, LabHost, layout
from .subnets import subnets

# The demo lab's ranges (lab/subnets.py): what a stack made without ranges gets.
FRONT, LAN, VPN = subnets("demo").front, subnets("demo").lan, subnets("demo").vpn


@dataclass
class Keypair:
    private_openssh: str
    public_line: str

    def write(self, path: Path) -> Path:
        path.write_text(self.private_openssh)
        path.chmod(0o600)
        return path


def ssh_keypair(comment: str) -> Keypair:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return Keypair(private, f"{public} {comment}")


def host_key_material() -> dict[str, str]:
    """One host's SSH host keys as components/host_keys.py makes them (tls.PrivateKey's OpenSSH
    forms: private with a newline, public `type base64` with a newline), by `<type>-private|public`."""
    made = {hostkeys.ED25519: ed25519.Ed25519PrivateKey.generate(),
            hostkeys.RSA: rsa.generate_private_key(public_exponent=65537, key_size=hostkeys.RSA_BITS)}
    out = {}
    for kind, key in made.items():
        out[f"{kind}-private"] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        out[f"{kind}-public"] = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode() + "\n"
    return out


def wireguard_keypair() -> tuple[str, str]:
    """(private, public) in wg's base64 form."""
    key = x25519.X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(pub).decode()


@dataclass
class LabStack:
    name: str
    raw: dict
    stack: Stack
    keys: dict[str, Keypair] = field(default_factory=dict)
    """SSH keypairs by person, plus `deploy`."""
    wireguard: dict[str, tuple[str, str]] = field(default_factory=dict)
    """WireGuard (private, public) by person."""
    front_ip: dict[str, str] = field(default_factory=dict)
    late: dict[str, str] = field(default_factory=dict)
    """Late values (secrets, generated keys) by name, as the program's components/late.py makes them."""
    host_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    """SSH host keys by host (`host_key_material`), made on first use: the lab's stand-in for Pulumi's."""

    def host_key(self, host: str) -> dict[str, str]:
        if host not in self.host_keys:
            self.host_keys[host] = host_key_material()
        return self.host_keys[host]

    def host_key_late(self) -> dict[str, str]:
        """The `hostkey/...` late values of every host, as components/host_keys.py serves them."""
        return {hostkeys.late_name(h, kind, half): v for h in self.stack.hosts
                for name, v in self.host_key(h).items() for kind, half in [name.split("-", 1)]}

    def known_hosts(self) -> str:
        """What the stack output `known_hosts` would say for this lab."""
        return hostkeys.known_hosts(self.stack, {h: self.host_key(h)[f"{hostkeys.PIN_TYPE}-public"] for h in self.stack.hosts})

    def tls_keys(self) -> dict[str, dict]:
        """The host keys as the program's tls.PrivateKey outputs, by resource name: for
        `ops.mockrun.run_stack(tls_keys=...)`, so the registered commands pin (and the converge
        installs) the keys the lab's hosts get, as a `pulumi up` would with Pulumi's."""
        # Lazy: both load pulumi (over a second here), which only the tests that run the program under
        # mocks need; every other user of this module (the CLI, most lab tests, the benches) does not.
        from components.host_keys import key_resource_name
        from ops.mockrun import tls_outputs

        return {key_resource_name(h, kind, self.stack.hosts[h].ssh_host_key_generation):
                tls_outputs(self.host_key(h)[f"{kind}-private"], self.host_key(h)[f"{kind}-public"])
                for h in self.stack.hosts for kind in hostkeys.KEY_TYPES}

    def pins(self) -> Pins:
        return Pins(self.known_hosts(), source=f"the lab's pins for stack {self.name}")

    def user_data(self, host: str) -> str:
        """The host's cloud-init snippet, with the lab's host keys where the program puts Pulumi's."""
        return cloud_init.user_data(self.stack, host, self.host_key(host))

    def script(self, host: str) -> str:
        """The host's converge script with its late values filled in, as the host receives it."""
        return fill(converge_script(self.stack, host), {**self.host_key_late(), **self.late})


def lab_stack(
    base: str = "prod",
    hosts: tuple[str, ...] = ("gw", "h1", "h2"),
    members: tuple[str, ...] = ("dave",),
    admins: tuple[str, ...] = ("alice", "bob"),
    front: ipaddress.IPv4Network = FRONT,
    lan: ipaddress.IPv4Network = LAN,
    vpn: ipaddress.IPv4Network = VPN,
) -> LabStack:
    """A valid stack named like `base` (prod: only admins log in; staging: members too).

    The first host is the gateway; the deployment server is the front network's first address,
    where the tests run.
    """
    raw = copy.deepcopy(read_stack_config(base))
    front_hosts = list(front.hosts())
    lan_hosts = list(lan.hosts())
    deploy_source = str(front_hosts[0])
    keys = {name: ssh_keypair(f"{name}@lab") for name in (*admins, *members, "deploy")}
    wg = {name: wireguard_keypair() for name in (*admins, *members)}
    raw["people"] = {
        name: {
            "keys": [keys[name].public_line],
            "roles": ["admin", "member"] if name in admins else ["member"],
            "wireguard": {"public_key": wg[name][1], "index": 10 + i},
        }
        for i, name in enumerate((*admins, *members))
    }
    raw["access"] = {
        "admins": list(admins),
        "members": list(members) + list(admins),
        "deploy": {"public_key": keys["deploy"].public_line, "source": deploy_source},
    }
    gateway, others = hosts[0], hosts[1:]
    node = next(iter(raw["proxmox"]["nodes"]))
    raw["network"].update(
        {
            "lan_cidr": str(lan),
            # LAN hosts route through the gateway host in the lab (there is no Proxmox NAT here).
            "gateway": str(lan_hosts[0]),
            "resolvers": [str(lan_hosts[0])],
            "public": {
                "bridge": raw["network"].get("public", {}).get("bridge", "vmbr0"),
                "ipv4_cidr": str(front),
                "ipv4_gateway": deploy_source,
            },
            "vpn": {"cidr": str(vpn), "port": 51820, "endpoint": f"{front_hosts[1]}:51820"},
        }
    )
    bridges = raw["proxmox"]["nodes"][node]["bridges"]
    if "vmbr0" not in bridges:
        bridges.append("vmbr0")
    first_id = raw["site"]["vm_ids"]["first"]
    raw["hosts"] = {gateway: {"vm_id": first_id + 1, "node": node, "lan_ip": str(lan_hosts[1]),
                              "public_ipv4": str(front_hosts[1]), "roles": ["gateway"]}}
    for i, name in enumerate(others):
        # The last host watches the others, so node_exporter's LAN-only firewall rule can be shown.
        role = "monitoring" if i == len(others) - 1 and len(others) > 1 else "app"
        raw["hosts"][name] = {"vm_id": first_id + 2 + i, "node": node, "lan_ip": str(lan_hosts[2 + i]), "roles": [role]}
    raw["services"] = {}
    # The zone names catalog hosts (name servers, mail) that a lab of this shape does not have.
    raw.pop("dns", None)
    # Monitoring names receivers and UI services of the real stack; a lab that watches adds its own.
    raw.pop("monitoring", None)
    stack = build_stack(raw, base)
    return LabStack(base, raw, stack, keys, wg, {gateway: str(front_hosts[1])})


def boot_and_converge(lab: Lab, ls: LabStack) -> dict:
    """Each lab host's first boot with its real cloud-init snippet, then converge, gateway first.

    Returns the converge Result per host. This is what `pulumi up` does to a new VM. A host whose
    sshd cannot be reached gets one more try after a pause; if that fails too, the error carries
    the host's sshd journal, so a CI failure can be read without the lab.
    """
    hosts = list(ls.stack.hosts)
    for h in hosts:  # RSA 4096 takes a while: made before the parallel boots, not in them
        ls.host_key(h)
    # Every later session of this process (the tests' own among them) trusts these keys only, and
    # a later converge of a re-rendered script gets the same late values.
    PINS.add(ls.known_hosts())
    LATE.update({**ls.host_key_late(), **ls.late})
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda h: lab.first_boot(h, ls.user_data(h)), hosts))
    for h in hosts:  # cloud-init restarted sshd (set_passwords); wait until it is back
        for _ in range(100):
            if lab.run(h, ["systemctl", "is-active", "-q", "ssh"], check=False).returncode == 0:
                break
            time.sleep(0.1)
    gateway = derive.gateway_name(ls.stack)
    order = [gateway] + [h for h in hosts if h != gateway]
    key = ls.keys["deploy"].private_openssh
    results = {}
    for h in order:
        try:
            results[h] = converge(ls.stack, h, key, ls.script(h))
        except Exception as first:  # noqa: BLE001 - retried once, then reported with the journal
            time.sleep(3)
            try:
                results[h] = converge(ls.stack, h, key, ls.script(h))
            except Exception as exc:
                probe = (
                    "journalctl -u ssh --no-pager | tail -15; ls -l /run/nologin /etc/nologin 2>&1; "
                    "getent shadow deploy; systemctl is-system-running; systemctl list-jobs --no-pager | head; "
                    "journalctl -b --no-pager | grep -iE 'nologin|user-sessions|pam_' | head -20"
                )
                journal = lab.run(gateway, probe, check=False).stdout
                if h != gateway:
                    journal += lab.run(h, probe, check=False).stdout
                raise RuntimeError(f"converge of {h} failed twice ({first!r}, then {exc!r}); sshd said:\n{journal}") from exc
    return results


# ---------------------------------------------------------------------------------------------------
# The web edge in the lab: reverse proxy, DNS, an upstream, and a private ACME CA (pebble).

WEB_FRONT, WEB_LAN, WEB_VPN = subnets("hweb").front, subnets("hweb").lan, subnets("hweb").vpn
PEBBLE_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
DKIM_SELECTOR = "lab2026"


@dataclass
class WebLabStack(LabStack):
    lab_hosts: list = field(default_factory=list)
    """lab.hosts.LabHost entries the Lab is built from (gateway, proxy and dns hosts have a front address)."""
    lan_gateway: str = ""
    """The gateway's LAN address: the default route of LAN-only hosts."""
    acme_ca_pem: str = ""
    """The CA behind pebble's own HTTPS (tls.ca_bundle): what certbot trusts to talk to pebble."""
    pebble_cert_pem: str = ""
    """pebble's HTTPS certificate (SAN: the root namespace's front address), signed by acme_ca_pem."""
    pebble_key_pem: str = ""
    pebble_address: str = ""
    """Where pebble listens: the root namespace's front address (ACME on PEBBLE_PORT, management on PEBBLE_MANAGEMENT_PORT)."""
    dkim_private_pem: str = ""


def _acme_server_ca(address: str) -> tuple[str, str, str]:
    """(CA cert, leaf cert, leaf key) PEMs: a throw-away CA and the HTTPS certificate of an ACME server at `address`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hypha lab ACME server CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return ca.public_bytes(pem).decode(), leaf.public_bytes(pem).decode(), key_pem


def _dkim_key() -> tuple[str, str]:
    """(private PEM, the p= value): a 2048-bit RSA key as a mail server would sign with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return private.decode(), base64.b64encode(der).decode()


def web_lab_stack(
    front: ipaddress.IPv4Network = WEB_FRONT,
    lan: ipaddress.IPv4Network = WEB_LAN,
    vpn: ipaddress.IPv4Network = WEB_VPN,
    admins: tuple[str, ...] = ("alice", "bob"),
) -> WebLabStack:
    """A valid prod-like stack whose catalog is the web edge lab: gateway `gw`, reverse proxy `web1`,
    name server `dns` (each with a front, "public", address), and `app` on the LAN only.

    Services: `www` (hypha.coop, www.hypha.coop) and `loomio` on `app`, the link shortener on `web1`;
    the zone has ns1, MX, SPF, a DKIM key and DMARC; TLS comes from pebble on the root namespace's
    front address, whose own HTTPS certificate is signed by a CA made here (tls.ca_bundle).
    """
    front, lan, vpn = ipaddress.ip_network(front), ipaddress.ip_network(lan), ipaddress.ip_network(vpn)
    base = lab_stack("prod", hosts=("gw",), members=(), admins=admins, front=front, lan=lan, vpn=vpn)
    raw = base.raw
    f, n = list(front.hosts()), list(lan.hosts())
    root = str(f[0])
    node = next(iter(raw["proxmox"]["nodes"]))
    first_id = raw["site"]["vm_ids"]["first"]
    domain = raw["site"]["domain"]

    def host(vm: int, lan_ip, roles: list[str], public=None) -> dict:
        h = {"vm_id": first_id + vm, "node": node, "lan_ip": str(lan_ip), "roles": roles}
        if public is not None:
            h["public_ipv4"] = str(public)
        return h

    # boot_and_converge converges the gateway first, then the others in this order: the name server
    # before the proxy, because the ACME CA resolves the proxy's names through it during the
    # proxy's converge; the upstream before the proxy, so the first requests find it.
    raw["hosts"] = {
        "gw": host(1, n[1], ["gateway"], f[1]),
        "dns": host(6, n[3], ["dns"], f[3]),
        "app": host(5, n[4], ["app"]),
        "web1": host(2, n[2], ["reverse_proxy"], f[2]),
    }
    raw["services"] = {
        "www": {"host": "app", "port": 8080, "public": True, "domains": [domain, f"www.{domain}"]},
        "loomio": {"host": "app", "port": 3000, "public": True, "domains": [f"loomio.{domain}"]},
        "link": {"host": "web1", "shortlinks": True, "public": True, "domains": [f"link.{domain}"]},
    }
    dkim_private, dkim_public = _dkim_key()
    raw["dns"] = {
        "nameservers": [{"name": f"ns1.{domain}"}],
        "mx": [{"host": "gw", "priority": 10}],
        "spf": {"qualifier": "-all"},
        "dkim": [{"selector": DKIM_SELECTOR, "public_key": dkim_public}],
        "dmarc": {"policy": "quarantine", "rua": [f"dmarc-reports@{domain}"]},
        "caa_issuers": ["letsencrypt.org"],
    }
    ca_pem, leaf_pem, leaf_key = _acme_server_ca(root)
    raw["tls"] = {
        "acme_directory": f"https://{root}:{PEBBLE_PORT}/dir",
        "email": f"hostmaster@{domain}",
        "ca_bundle": ca_pem,
    }
    stack = build_stack(raw, "prod")
    lab_hosts = [
        LabHost("gw", str(n[1]), str(f[1])),
        LabHost("web1", str(n[2]), str(f[2])),
        LabHost("dns", str(n[3]), str(f[3])),
        LabHost("app", str(n[4])),
    ]
    return WebLabStack(
        "prod", raw, stack, base.keys, base.wireguard,
        {h.name: h.front for h in lab_hosts if h.front},
        lab_hosts=lab_hosts, lan_gateway=str(n[1]), acme_ca_pem=ca_pem, pebble_cert_pem=leaf_pem,
        pebble_key_pem=leaf_key, pebble_address=root, dkim_private_pem=dkim_private,
    )


@contextlib.contextmanager
def converged_lab(prefix: str, base: str, hosts: tuple[str, ...], members: tuple[str, ...],
                  front: ipaddress.IPv4Network, lan: ipaddress.IPv4Network, vpn: ipaddress.IPv4Network):
    """A lab of `hosts` (the first is the gateway) booted and converged from `base`'s config, yielding
    (lab, LabStack); every first converge must have passed."""
    ls = lab_stack(base, hosts=hosts, members=members, front=front, lan=lan, vpn=vpn)
    with Lab(prefix, layout(hosts[0], hosts[1:], front=str(front), lan=str(lan)), front=str(front), lan=str(lan)) as lab:
        for h, r in boot_and_converge(lab, ls).items():
            assert r.ok, f"{h}: {r.stdout}{r.stderr}"
        yield lab, ls
