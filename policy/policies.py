"""The co-op's agreed rules as CrossGuard policies, each reading the resources the program registers.

Kept apart from `__main__.py` because building a `PolicyPack` starts the analyzer server and
blocks; the tests and `ops/policy_check.py` import `POLICIES` from here and drive the SDK's own
analyzer with them. Which VMs are prod or staging comes from their tags (`derive.vm_tags` puts the
stack name on every VM), never from the stack's name, so both stacks run the same pack and a prod
VM that turns up in the wrong stack is still judged as prod.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.view import (
    AUTHORIZED_KEYS_DIR,
    BACKUP_JOB,
    COMMAND,
    DEPLOY_USER,
    SNIPPET,
    VM,
    HostView,
    env_list,
    hosts,
    revealed,
    script_files,
    snippet_text,
    stack_model,
    user_data_files,
    with_tag,
)

PACK_NAME = "hypha-infra"
# Without a policy config every rule blocks; config.staging.json turns them advisory on staging.
DEFAULT_LEVEL = EnforcementLevel.MANDATORY
ALLOW_REPLACE_ENV = "HYPHA_ALLOW_REPLACE"
BASELINE_ENV = "HYPHA_BASELINE"
SSHD_FILE = re.compile(r"^/etc/ssh/sshd_config(\.d/.*)?$")
DEPLOY_FILE = f"{AUTHORIZED_KEYS_DIR}{DEPLOY_USER}"
NODE_EXPORTER_PORT = 9100

_TAGS = {
    "prodTag": {"type": "string", "default": "prod", "description": "VM tag that marks a prod VM."},
    "stagingTag": {"type": "string", "default": "staging", "description": "VM tag that marks a staging VM."},
}


def _tag(args, key: str) -> str:
    return str(args.get_config().get(key) or _TAGS[key]["default"])


# ---------------------------------------------------------------------------------------------------
# prod SSH only for 2-3 admins


def _is_login(line: str) -> bool:
    """A key that gets a shell. One bound to a forced command under `restrict` (the borg target's
    `borg serve` per client) runs that command only: a service, not a person's login."""
    forced = re.search(r'(?:^|,)command="', line) and re.search(r"(?:^|,)restrict(?:,|\s)", line)
    return not forced


def _logins(view: HostView) -> set[str]:
    """Accounts that can log in with a key: key files with a login key, cloud-init users with keys."""
    names = set()
    for _where, f in view.all_files():
        if f.path.startswith(AUTHORIZED_KEYS_DIR) and any(_is_login(k) for k in _key_lines(f.content)):
            names.add(f.path[len(AUTHORIZED_KEYS_DIR):])
    for user in view.user_data.get("users") or []:
        if isinstance(user, dict) and user.get("ssh_authorized_keys"):
            names.add(str(user.get("name")))
    names.discard(DEPLOY_USER)
    return names


def _key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def prod_ssh_admins_only(args: StackValidationArgs, report: ReportViolation) -> None:
    cfg = args.get_config()
    low, high = int(cfg.get("minAdmins", 2)), int(cfg.get("maxAdmins", 3))
    admins = set(stack_model().access.admins)
    for view in with_tag(hosts(args.resources), _tag(args, "prodTag")):
        logins = _logins(view)
        strangers = sorted(logins - admins)
        if strangers:
            report(f"{view.name}: {', '.join(strangers)} can log in but {'is' if len(strangers) == 1 else 'are'} not "
                   f"in access.admins; prod logins are for admins only (site.ssh_access: admins)", view.vm.urn)
        if not low <= len(logins) <= high:
            report(f"{view.name}: {len(logins)} people can log in ({', '.join(sorted(logins)) or 'nobody'}); "
                   f"prod needs between {low} and {high} admins (access.admins)", view.vm.urn)


# ---------------------------------------------------------------------------------------------------
# no password login, no root login


def sshd_problems(path: str, text: str) -> list[str]:
    """What in one sshd config file lets a password or root in."""
    bad = {
        "passwordauthentication": lambda v: v != "no",
        "permitrootlogin": lambda v: v != "no",
        "kbdinteractiveauthentication": lambda v: v != "no",
        "challengeresponseauthentication": lambda v: v != "no",
        "permitemptypasswords": lambda v: v != "no",
    }
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(None, 1)
        if len(words) == 2 and words[0].lower() in bad and bad[words[0].lower()](words[1].strip().lower()):
            out.append(f"{path}: `{line.strip()}`")
    return out


def _turns_off(files: list[tuple[str, str]], keyword: str) -> bool:
    return any(
        re.search(rf"^\s*{keyword}\s+no\s*$", text, re.I | re.M) for path, text in files if SSHD_FILE.match(path)
    )


def _login_problems(files: list[tuple[str, str]]) -> list[str]:
    sshd = [(p, t) for p, t in files if SSHD_FILE.match(p)]
    out = [p for path, text in sshd for p in sshd_problems(path, text)]
    if sshd:
        # Debian's own sshd_config leaves password login on: our drop-in must say no, not stay silent.
        for keyword in ("PasswordAuthentication", "PermitRootLogin"):
            if not _turns_off(sshd, keyword):
                out.append(f"no sshd file says `{keyword} no` (Debian's default lets it in)")
    return out


def no_password_or_root_login(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == SNIPPET:
        data, files = user_data_files(snippet_text(args.props))
        if not data:
            return
        if data.get("ssh_pwauth") is not False:
            report(f"cloud-init: ssh_pwauth is {data.get('ssh_pwauth')!r}; it must be false")
        if data.get("disable_root") is False:
            report("cloud-init: disable_root is false; root must not log in")
        for user in data.get("users") or []:
            if not isinstance(user, dict):
                continue
            name = user.get("name", "?")
            if user.get("lock_passwd") is False or any(k in user for k in ("passwd", "hashed_passwd", "plain_text_passwd")):
                report(f"cloud-init: user {name} gets a password; logins are by key only")
            if name == "root" and user.get("ssh_authorized_keys"):
                report("cloud-init: root gets an SSH key; root must not log in")
        if data.get("chpasswd"):
            report("cloud-init: chpasswd sets passwords; logins are by key only")
        for problem in _login_problems([(f.path, f.content) for f in files.values()]):
            report(f"cloud-init: {problem}")
    elif args.resource_type == COMMAND:
        files = script_files(str(args.props.get("stdin") or ""))
        for problem in _login_problems([(f.path, f.content) for f in files.values()]):
            report(f"converge: {problem}")
        root_keys = [p for p in files if p in (f"{AUTHORIZED_KEYS_DIR}root", "/root/.ssh/authorized_keys")]
        for path in root_keys:
            report(f"converge: {path} gives root a key; root must not log in")


# ---------------------------------------------------------------------------------------------------
# the deploy key only on the deploy user, bound to the deploy host's address


def _blob(line: str) -> Optional[str]:
    """The base64 part of an authorized_keys line (options first or not)."""
    m = re.search(r"(?:^|\s)(?:ssh-|ecdsa-|sk-)\S+\s+([A-Za-z0-9+/=]{16,})", line)
    return m.group(1) if m else None


def deploy_key_bound(args: StackValidationArgs, report: ReportViolation) -> None:
    stack = stack_model()
    deploy_blob = stack.access.deploy.public_key.split()[1]
    views = hosts(args.resources)
    from model import derive

    # Not the gateway's LAN address: every member's jumped session arrives from that one. The deploy
    # user's alone leave from the deploy address (model/derive.py deploy_address).
    deploy_address = derive.deploy_address(stack)
    for name, view in sorted(views.items()):
        urn = view.vm.urn if view.vm else None
        # The gateway accepts the key from the deployment server; every other host from the
        # gateway's deploy address, since deploy sessions are jumped through it.
        expected = str(stack.access.deploy.source) if "gateway" in view.tags else deploy_address
        deploy_files = []
        for where, f in view.all_files():
            if f.path == DEPLOY_FILE:
                deploy_files.append((where, f))
            elif deploy_blob in f.content:
                report(f"{name}: the deploy key is in {f.path} ({where}); it belongs only in {DEPLOY_FILE}", urn)
        for user in view.user_data.get("users") or []:
            if isinstance(user, dict) and deploy_blob in json.dumps(user.get("ssh_authorized_keys") or []):
                report(f"{name}: cloud-init gives user {user.get('name')} the deploy key", urn)
        for where, f in deploy_files:
            for line in _key_lines(f.content):
                if _blob(line) != deploy_blob:
                    report(f"{name}: {DEPLOY_FILE} ({where}) holds a key that is not the deploy key: {line[:60]}…", urn)
                    continue
                source = re.search(r'(?:^|,)from="([^"]*)"', line)
                if source is None:
                    report(f"{name}: the deploy key ({where}) has no from= option; bind it to {expected}", urn)
                elif source.group(1) != expected:
                    report(f"{name}: the deploy key ({where}) is accepted from {source.group(1)}, not only {expected}", urn)
                if not re.search(r"(?:^|,)restrict(?:,|\s)", line):
                    report(f"{name}: the deploy key ({where}) lacks `restrict` (no pty, agent or X11 for it)", urn)


# ---------------------------------------------------------------------------------------------------
# every prod VM that holds data is protected, backed up and monitored


def data_vms_protected_backed_up_monitored(args: StackValidationArgs, report: ReportViolation) -> None:
    from model import derive

    stack = stack_model()
    views = hosts(args.resources)
    jobs = [r for r in args.resources if r.resource_type == BACKUP_JOB]
    monitors = with_tag(views, "monitoring")
    # Prometheus's own config only: a host's node_exporter listen address names its own ip:9100 too.
    scraped = "\n".join(
        f.content for m in monitors for path, f in m.converge_files.items() if path.startswith("/etc/prometheus/")
    )
    for view in with_tag(views, _tag(args, "prodTag")):
        if view.name not in stack.hosts or not derive.holds_data(stack, view.name):
            continue
        missing = []
        if view.vm.props.get("protection") is not True:
            missing.append("Proxmox protection is off (site.protect_data_vms)")
        if not view.vm.opts.protect:
            missing.append("the VM resource is not `protect`ed in Pulumi")
        if not any(
            job.props.get("all") is True or str(view.vm_id) in [str(x) for x in (job.props.get("vmids") or [])]
            for job in jobs
        ):
            missing.append(f"no {BACKUP_JOB} includes vm id {view.vm_id}")
        files = view.converge_files
        # The borg target backs up no other way than by copying its repositories offsite.
        offsite = "backup_target" in view.tags and any(
            path.startswith("/etc/systemd/system/") and "offsite" in path for path in files
        )
        if not offsite and not any(re.match(r"^/etc/borgmatic(\.d)?/[^/]+\.ya?ml$", path) for path in files):
            missing.append(
                "its converge has no offsite copy (backup.offsite)" if "backup_target" in view.tags
                else "its converge holds no borgmatic config"
            )
        if not monitors:
            missing.append("the stack has no monitoring host")
        elif f"{view.lan_ip}:{NODE_EXPORTER_PORT}" not in scraped:
            missing.append(f"no monitoring host scrapes {view.lan_ip}:{NODE_EXPORTER_PORT}")
        if missing:
            report(f"{view.name} holds data but: {'; '.join(missing)}", view.vm.urn)


# ---------------------------------------------------------------------------------------------------
# every host's SSH identity is the program's, and every connection pins it

_HOST_KEY = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]+={0,2}")


def ssh_host_keys_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == COMMAND:
        conn = revealed(args.props.get("connection")) or {}
        legs = [("connection", conn)] + ([("proxy", conn["proxy"])] if conn.get("proxy") else [])
        for leg, c in legs:
            if not _HOST_KEY.fullmatch(str(c.get("hostKey") or "")):
                report(f"the {leg} to {c.get('host')} pins no ssh-ed25519 host key: without `host_key` the command "
                       "provider accepts whatever answers (components/host_keys.py makes the pins)")
    elif args.resource_type == SNIPPET:
        data, _files = user_data_files(snippet_text(args.props))
        if not data:
            return
        keys = data.get("ssh_keys") or {}
        if data.get("ssh_deletekeys") is not True or not {"ed25519_private", "ed25519_public"} <= set(keys):
            report("cloud-init: the VM's host keys must be the program's (`ssh_keys` with ed25519_private and "
                   "ed25519_public, `ssh_deletekeys: true`); a key the VM makes itself is pinned nowhere")


# ---------------------------------------------------------------------------------------------------
# staging lives on the VPN


def staging_vpn_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != VM or _tag(args, "stagingTag") not in list(args.props.get("tags") or []):
        return
    net = stack_model().network
    for dev in args.props.get("networkDevices") or []:
        if dev.get("bridge") != net.lan_bridge:
            report(f"staging VM on bridge {dev.get('bridge')}; staging VMs sit on the LAN bridge {net.lan_bridge} only")
    for cfg in (args.props.get("initialization") or {}).get("ipConfigs") or []:
        v4 = (cfg or {}).get("ipv4") or {}
        v6 = (cfg or {}).get("ipv6") or {}
        if v4.get("address") and ipaddress.ip_interface(v4["address"]).ip not in net.lan_cidr:
            report(f"staging VM has address {v4['address']} outside the LAN {net.lan_cidr}; staging is reached over the VPN")
        if v6.get("address"):
            report(f"staging VM has IPv6 address {v6['address']}; staging has no public address")


# ---------------------------------------------------------------------------------------------------
# memory, cores and disk within each node's capacity


@dataclass
class _Asked:
    """What one VM resource asks of its node, in the shape model.capacity.usage reads."""

    node: str
    cores: int
    memory_mb: int
    disk_gb: int
    datastore: Optional[str]


def node_capacity(args: StackValidationArgs, report: ReportViolation) -> None:
    from model.capacity import usage

    proxmox = stack_model().proxmox
    asked = {}
    for r in args.resources:
        if r.resource_type != VM:
            continue
        disks = list(r.props.get("disks") or [])
        asked[r.urn] = _Asked(
            node=str(r.props.get("nodeName")),
            cores=int((r.props.get("cpu") or {}).get("cores") or 1) * int((r.props.get("cpu") or {}).get("sockets") or 1),
            memory_mb=int((r.props.get("memory") or {}).get("dedicated") or 512),
            disk_gb=sum(int(d.get("size") or 0) for d in disks),
            datastore=(disks[0].get("datastoreId") if disks else None) or proxmox.default_datastore,
        )
        if asked[r.urn].node not in proxmox.nodes:
            report(f"{r.props.get('name')} is on node {asked[r.urn].node}, which proxmox.nodes does not list", r.urn)
    for node, u in usage(proxmox, asked).items():
        for key, item in u.items():
            if item.level == "over":
                report(f"node {node}: VMs ask for {item.used} {key} but it offers {item.offered}")


# ---------------------------------------------------------------------------------------------------
# VM ids within the stack's range


def vm_ids_in_range(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != VM:
        return
    ids = stack_model().site.vm_ids
    vm_id = args.props.get("vmId")
    if vm_id is None or not ids.first <= int(vm_id) <= ids.last:
        report(f"vm id {vm_id} is outside this stack's range {ids.first}-{ids.last} (site.vm_ids)")


# ---------------------------------------------------------------------------------------------------
# every public service has DNS and TLS; the mail domain has SPF and DMARC


def _zones(views: dict[str, HostView]):
    """Zones the dns hosts serve, parsed with dnspython: origin (no trailing dot) to Zone."""
    import dns.zone

    out = {}
    for view in with_tag(views, "dns"):
        for path, f in view.converge_files.items():
            if path.endswith(".zone"):
                try:
                    zone = dns.zone.from_text(f.content, relativize=False, check_origin=False)
                except Exception:  # noqa: BLE001 - an unreadable zone counts as no records
                    continue
                out[zone.origin.to_text(omit_final_dot=True)] = zone
    return out


def _records(zones, name: str, types: tuple[str, ...]) -> list[str]:
    import dns.name
    import dns.rdatatype

    fqdn = dns.name.from_text(name)
    for origin, zone in zones.items():
        if fqdn.is_subdomain(dns.name.from_text(origin)):
            node = zone.get_node(fqdn)
            if node is None:
                return []
            return [rd.to_text() for t in types for rds in [node.get_rdataset(1, dns.rdatatype.from_text(t))] if rds for rd in rds]
    return []


def _tls_served(views: dict[str, HostView], domain: str) -> bool:
    """A proxy answers `domain` on 443 with a certificate, and its converge asks the ACME CA for it."""
    for view in with_tag(views, "reverse_proxy"):
        if not re.search(rf"certbot certonly .*-d {re.escape(domain)}(\s|$)", view.script, re.M):
            continue
        for path, f in view.converge_files.items():
            if not path.startswith("/etc/nginx/"):
                continue
            for block in re.split(r"^\s*server\s*\{", f.content, flags=re.M)[1:]:
                names = re.search(r"^\s*server_name\s+([^;]*);", block, re.M)
                if (
                    names and domain in names.group(1).split()
                    and re.search(r"^\s*listen\s+\S*443\s+ssl", block, re.M)
                    and re.search(r"^\s*ssl_certificate\s", block, re.M)
                ):
                    return True
    return False


def public_services_dns_tls(args: StackValidationArgs, report: ReportViolation) -> None:
    stack = stack_model()
    views = hosts(args.resources)
    zones = _zones(views)
    for name, svc in sorted(stack.services.items()):
        if not svc.public:
            continue
        for domain in svc.domains:
            if not _records(zones, domain, ("A", "AAAA", "CNAME")):
                report(f"service {name}: {domain} has no A, AAAA or CNAME record in any zone a dns host serves")
            if not _tls_served(views, domain):
                report(f"service {name}: no reverse proxy serves {domain} on 443 with a certificate it asks the ACME CA for")


def mail_spf_dmarc(args: StackValidationArgs, report: ReportViolation) -> None:
    domain = stack_model().site.domain
    zones = _zones(hosts(args.resources))
    if not zones:
        report(f"{domain}: no dns host serves a zone, so neither SPF nor DMARC is published")
        return
    txt = [t.strip('"') for t in _records(zones, domain, ("TXT",))]
    spf = [t for t in txt if t.startswith("v=spf1")]
    if len(spf) != 1:
        report(f"{domain}: {len(spf)} SPF records (TXT v=spf1); exactly one is needed")
    elif not re.search(r"\s[-~]all$", spf[0]):
        report(f"{domain}: SPF `{spf[0]}` does not end in -all or ~all, so anyone may send as the domain")
    dmarc = [t.strip('"') for t in _records(zones, f"_dmarc.{domain}", ("TXT",)) if t.strip('"').startswith("v=DMARC1")]
    if len(dmarc) != 1:
        report(f"{domain}: {len(dmarc)} DMARC records (TXT v=DMARC1 at _dmarc.{domain}); exactly one is needed")
    elif not re.search(r";\s*p=(none|quarantine|reject)\s*(;|$)", dmarc[0]):
        report(f"{domain}: DMARC `{dmarc[0]}` has no valid p= policy")


def _signers(views: dict[str, HostView], domain: str, published: set[str]) -> list[str]:
    """Mail hosts whose OpenDKIM signs `domain` with a key the zone publishes and the converge ships."""
    out = []
    for view in with_tag(views, "mail"):
        for path, f in view.converge_files.items():
            if not path.endswith("/opendkim.conf"):
                continue
            setting = dict(re.findall(r"^(Domain|Selector|KeyFile)\s+(\S+)\s*$", f.content, re.M))
            if (setting.get("Domain") == domain and setting.get("Selector") in published
                    and setting.get("KeyFile") in view.converge_files):
                out.append(view.name)
    return out


def dmarc_enforced_only_when_signed(args: StackValidationArgs, report: ReportViolation) -> None:
    """DMARC quarantine/reject only when the domain's own mail passes it: a mail host signs with a
    published key. A domain that sends no mail at all (SPF `v=spf1 -all`) may reject outright."""
    domain = stack_model().site.domain
    views = hosts(args.resources)
    zones = _zones(views)
    dmarc = [t.strip('"') for t in _records(zones, f"_dmarc.{domain}", ("TXT",)) if t.strip('"').startswith("v=DMARC1")]
    policy = re.search(r";\s*p=(quarantine|reject)\s*(;|$)", dmarc[0]) if len(dmarc) == 1 else None
    if policy is None:
        return  # none, or no valid record (mail-spf-dmarc reports that)
    spf = [t.strip('"') for t in _records(zones, domain, ("TXT",)) if t.strip('"').startswith("v=spf1")]
    if spf == ["v=spf1 -all"]:
        return
    published = set()
    for origin, zone in zones.items():
        for name, node in zone.nodes.items():
            text = name.to_text(omit_final_dot=True)
            if text.endswith(f"._domainkey.{domain}") and any(
                "".join(s.decode() for s in rd.strings).startswith("v=DKIM1") for rds in node.rdatasets for rd in rds
                if hasattr(rd, "strings")
            ):
                published.add(text.removesuffix(f"._domainkey.{domain}"))
    if not _signers(views, domain, published):
        report(
            f"{domain}: DMARC p={policy.group(1)} while no host with role mail signs the domain's mail with a key "
            "the zone publishes, so receivers would refuse its own mail; set dns.dmarc.policy: none until one does"
        )


# ---------------------------------------------------------------------------------------------------
# no replacement of a prod VM without an explicit allow flag

# VmLegacy inputs whose change makes the Proxmox provider (bpg) destroy and re-create the VM.
REPLACE_FIELDS = ("vmId", "nodeName", "clone", "initialization.userDataFileId")


def _at(props: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(props, Mapping):
            return None
        props = props.get(part)
    return _plain(props)


def _plain(value: Any) -> Any:
    """JSON-comparable: the wire's floats and an export's ints compare equal."""
    if isinstance(value, Mapping):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, str)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def replacements(old_resources: list[dict], new_resources: list, prod_tag: str = "prod") -> list[tuple[str, str, str]]:
    """(vm name, urn, why) for every prod VM of the baseline the new resources would replace or delete."""
    new = {r.urn: r for r in new_resources}
    out = []
    for old in old_resources:
        inputs = old.get("inputs") or {}
        if old.get("type") != VM or prod_tag not in (inputs.get("tags") or []):
            continue
        name = str(inputs.get("name") or old["urn"].rsplit("::", 1)[-1])
        cur = new.get(old["urn"])
        if cur is None:
            out.append((name, old["urn"], "its resource is gone (deleted, or renamed: a new URN is a new VM)"))
            continue
        ignored = set(cur.opts.ignore_changes or [])
        changed = [f for f in REPLACE_FIELDS if f not in ignored and _at(inputs, f) != _at(cur.props, f)]
        if changed:
            out.append((name, old["urn"], f"{', '.join(changed)} changed, which replaces the VM"))
    return out


def _baseline(args) -> Optional[list[dict]]:
    path = os.environ.get(BASELINE_ENV) or args.get_config().get("baselineFile")
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    return list((state.get("deployment") or state).get("resources") or [])


def prod_vm_no_replacement(args: StackValidationArgs, report: ReportViolation) -> None:
    old = _baseline(args)
    if old is None:
        args.not_applicable(f"no baseline: set {BASELINE_ENV} to a `pulumi stack export` file to compare against")
    allowed = set(env_list(ALLOW_REPLACE_ENV)) | {str(x) for x in args.get_config().get("allowReplace") or []}
    for name, urn, why in sorted(replacements(old, args.resources, _tag(args, "prodTag"))):
        if name in allowed:
            continue
        report(f"prod VM {name}: {why}; if that is intended, run with {ALLOW_REPLACE_ENV}={name}", urn)


# ---------------------------------------------------------------------------------------------------
# VM firewalls that Proxmox would ignore

CLUSTER_FIREWALL = "proxmoxve:cluster/firewallLegacy:FirewallLegacy"
FIREWALL_OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"
FIREWALL_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
PROXMOX_API_PORT = 8006


def _admits(rules: list, source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
    for rule in rules:
        if (rule.get("type"), rule.get("action"), rule.get("proto")) != ("in", "ACCEPT", "tcp"):
            continue
        if rule.get("enabled") is False or str(rule.get("dport")) != str(port):
            continue
        try:
            if source in ipaddress.ip_network(str(rule.get("source")), strict=False):
                return True
        except ValueError:
            continue
    return False


def vm_firewalls_take_effect(args: StackValidationArgs, report: ReportViolation) -> None:
    vm_firewalls = [
        r for r in args.resources
        if r.resource_type == FIREWALL_OPTIONS and r.props.get("enabled") is True
        or r.resource_type == VM and any((d or {}).get("firewall") is True for d in r.props.get("networkDevices") or [])
    ]
    if not vm_firewalls:
        return
    cluster = [r for r in args.resources if r.resource_type == CLUSTER_FIREWALL]
    if not any(r.props.get("enabled") is True for r in cluster):
        report(
            f"{len(vm_firewalls)} VM firewall resources are set but no {CLUSTER_FIREWALL} is registered with "
            "enabled: true; Proxmox ignores every VM's firewall while the datacenter firewall is off "
            "(components/cluster_firewall.py)",
            vm_firewalls[0].urn,
        )
        return
    # On, it drops what no rule admits: the deployment server must still reach the API and SSH.
    rules = [
        rule
        for r in args.resources
        if r.resource_type == FIREWALL_RULES and not r.props.get("nodeName") and r.props.get("vmId") is None
        and r.props.get("containerId") is None
        for rule in r.props.get("rules") or []
    ]
    source = stack_model().access.deploy.source
    for port, what in ((PROXMOX_API_PORT, "API"), (22, "SSH")):
        if not _admits(rules, source, port):
            report(f"the datacenter firewall would lock this stack's deployment server {source} out of the nodes' "
                   f"{what} (tcp {port}); add it to proxmox.firewall.management", cluster[0].urn)


# ---------------------------------------------------------------------------------------------------

_ADMINS_SCHEMA = PolicyConfigSchema(
    {
        "minAdmins": {"type": "integer", "default": 2, "description": "Fewest people with a prod login."},
        "maxAdmins": {"type": "integer", "default": 3, "description": "Most people with a prod login."},
        "prodTag": _TAGS["prodTag"],
    }
)
_PROD = PolicyConfigSchema({"prodTag": _TAGS["prodTag"]})
_STAGING = PolicyConfigSchema({"stagingTag": _TAGS["stagingTag"]})
_REPLACE_SCHEMA = PolicyConfigSchema(
    {
        "allowReplace": {"type": "array", "items": {"type": "string"}, "description": "Prod VMs this change may replace."},
        "baselineFile": {"type": "string", "description": f"`pulumi stack export` file (or set {BASELINE_ENV})."},
        "prodTag": _TAGS["prodTag"],
    }
)

POLICIES = [
    StackValidationPolicy(
        "prod-ssh-admins-only", "Prod SSH is for 2 or 3 infrastructure admins only.",
        validate=prod_ssh_admins_only, config_schema=_ADMINS_SCHEMA,
    ),
    ResourceValidationPolicy(
        "no-password-or-root-login", "No password login and no root login in any cloud-init or sshd file.",
        validate=no_password_or_root_login,
    ),
    ResourceValidationPolicy(
        "ssh-host-keys-pinned", "Every host's SSH host key is the program's, and every SSH leg pins it.",
        validate=ssh_host_keys_pinned,
    ),
    StackValidationPolicy(
        "deploy-key-bound", "The deploy key is only on the deploy user and only accepted from the deploy host's address.",
        validate=deploy_key_bound,
    ),
    StackValidationPolicy(
        "data-vms-protected-backed-up-monitored", "Every prod VM that holds data is protected, backed up and monitored.",
        validate=data_vms_protected_backed_up_monitored, config_schema=_PROD,
    ),
    ResourceValidationPolicy(
        "staging-vpn-only", "Staging VMs have no public address and no bridge but the LAN's.",
        validate=staging_vpn_only, config_schema=_STAGING,
    ),
    StackValidationPolicy(
        "node-capacity", "VMs' cores, memory and disks fit each Proxmox node.", validate=node_capacity,
    ),
    ResourceValidationPolicy(
        "vm-ids-in-range", "VM ids lie in the stack's range.", validate=vm_ids_in_range,
    ),
    StackValidationPolicy(
        "public-services-dns-tls", "Every public service has DNS records and a TLS certificate.",
        validate=public_services_dns_tls,
    ),
    StackValidationPolicy(
        "mail-spf-dmarc", "The mail domain publishes SPF and DMARC.", validate=mail_spf_dmarc,
    ),
    StackValidationPolicy(
        "dmarc-enforced-only-when-signed",
        "DMARC quarantine or reject only when a mail host signs the domain's mail (or the domain sends none).",
        validate=dmarc_enforced_only_when_signed,
    ),
    StackValidationPolicy(
        "vm-firewalls-take-effect",
        "The datacenter firewall is on whenever VMs have firewalls, and still admits the deployment server.",
        validate=vm_firewalls_take_effect,
    ),
    StackValidationPolicy(
        "prod-vm-no-replacement", "No prod VM is replaced unless the change says so explicitly.",
        validate=prod_vm_no_replacement, config_schema=_REPLACE_SCHEMA,
    ),
]
