"""The both-ways table of the policy pack: per policy, mutations of the committed stacks' mock runs and what it must say.

Each `Case` starts from the real program's mock run of one stack (`run_stack`), changes the
registered resources the way a code change would (a key file added to a converge script, a VM
moved to another bridge), and names the violation messages the policy must report, in order, or
none: a passing case. tests/test_policy.py runs every case through the SDK's own analyzer
(`ops.policy_check.evaluate`) and holds that every registered policy has at least one case of each
kind, so a policy added without its cases fails the suite. The mutation helpers live here too; the
policy tests that need more than one verdict use them.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional

import yaml

from ops.mockrun import Registered, Run, plain
from policy.view import script_files
from render import wire
from render.plan import ManagedFile
from render.roles import monitoring as mr
from model.load import read_stack_config
from tests import program_runs
from tests.program_runs import CLUSTER_FIREWALL, FW_RULES, SNIPPET, VM

COMMAND = "command:remote:Command"
BACKUP_JOB = "proxmoxve:backup/job:Job"
ZONE = "/etc/bind/hypha/hypha.coop.zone"
DEPLOY_KEYS = "/etc/ssh/authorized_keys/deploy"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-hypha.conf"
PROMETHEUS = "/etc/prometheus/prometheus.yml"
RULES = mr.RULES_FILE


# ---------------------------------------------------------------------------------------------------
# helpers (AWSGuard style: one resource changed, one policy asked)


def base_run(stack: str) -> Run:
    """The stack's mock run as committed, shared with the other test modules (tests/program_runs.py
    runs each stack once per session): read it, never change it; `fresh` gives a copy to change."""
    return program_runs.run(stack)


@lru_cache(maxsize=None)
def _pickled(stack: str) -> bytes:
    return pickle.dumps(base_run(stack), protocol=pickle.HIGHEST_PROTOCOL)


def fresh(stack: str) -> Run:
    """A private copy of the stack's mock run, to change freely: unpickled from one pickle per stack,
    as deep a copy as copy.deepcopy (nothing is shared with the run) at a fraction of its cost."""
    return pickle.loads(_pickled(stack))


def resource(run: Run, type_: str, host: str) -> Registered:
    """The resource of `type_` inside host `host`'s component (ProxmoxVm or HostBootstrap)."""
    return next(
        r for r in run.resources
        if r.type == type_ and r.parent_name == host and (type_ != COMMAND or r.name == f"{host}-converge")
    )


def stdin_of(cmd: Registered) -> str:
    value = cmd.inputs["stdin"]
    return value["value"] if isinstance(value, dict) else value


def set_stdin(cmd: Registered, script: str) -> None:
    if isinstance(cmd.inputs["stdin"], dict):  # a secret on the wire: keep it one
        cmd.inputs["stdin"]["value"] = script
    else:
        cmd.inputs["stdin"] = script


def set_file(run: Run, host: str, path: str, content: str | None) -> None:
    """Change (or add, or with None remove) one file in the host's converge script, as a code change would."""
    cmd = resource(run, COMMAND, host)
    script = stdin_of(cmd)
    old = [s.span for s in wire.parse_stages(script) if s.path == path]
    new = "" if content is None else wire.stage_call(999, ManagedFile(path, content)) + "\n"
    if old:
        start, end = old[0]
        script = script[:start] + new + script[end + 1:]
    else:
        script = script.replace("\n# Files an earlier converge managed", f"\n{new}\n# Files an earlier converge managed", 1)
    set_stdin(cmd, script)


def file_of(run: Run, host: str, path: str) -> str:
    return script_files(stdin_of(resource(run, COMMAND, host)))[path].content


def edit_file(run: Run, host: str, path: str, edit: Callable[[str], str]) -> None:
    set_file(run, host, path, edit(file_of(run, host, path)))


def set_user_data(run: Run, host: str, edit) -> None:
    snippet = resource(run, SNIPPET, host)
    source = plain(snippet.inputs["sourceRaw"])  # the secret's wrapper stays: edited in place
    doc = yaml.safe_load(source["data"])
    edit(doc)
    source["data"] = "#cloud-config\n" + yaml.safe_dump(doc)


def vm(run: Run, host: str) -> Registered:
    return resource(run, VM, host)


def cluster_rules(run: Run) -> Registered:
    fw = next(r for r in run.resources if r.type == CLUSTER_FIREWALL)
    return next(r for r in run.resources if r.type == FW_RULES and r.parent == fw.parent)


def drop(run: Run, type_: str) -> None:
    run.resources = [r for r in run.resources if r.type != type_]


# ---------------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Case:
    """One row: `policy` judging `stack`'s mock run after `mutate` (None: as committed) says `expected`."""

    policy: str
    spec: str  # what the row shows, read as its test id
    stack: str
    mutate: Optional[Callable[[Run], None]]
    expected: tuple[str, ...]
    config: Optional[dict] = None  # the policy config; None: policy/config.<stack>.json
    baseline: bool = False  # judge against the committed prod run exported as `pulumi stack export`
    env: dict = field(default_factory=dict)

    @property
    def passes(self) -> bool:
        return not self.expected

    @property
    def id(self) -> str:
        return f"{self.policy}: {'passes' if self.passes else 'fails'}: {self.spec}"


def _all(*steps: Callable[[Run], None]) -> Callable[[Run], None]:
    def mutate(run: Run) -> None:
        for step in steps:
            step(run)

    return mutate


def _dave_gets_a_prod_login(run: Run) -> None:
    dave = read_stack_config("prod")["people"]["dave"]["keys"][0]
    set_file(run, "loomio", "/etc/ssh/authorized_keys/dave", dave + "\n")


def _alice_gets_the_deploy_key(run: Run) -> None:
    deploy = read_stack_config("prod")["access"]["deploy"]["public_key"]
    edit_file(run, "loomio", "/etc/ssh/authorized_keys/alice", lambda text: text + deploy + "\n")


def _loosen_cloud_init_sshd(run: Run) -> None:
    edit_file(run, "bw1", SSHD_DROPIN, lambda t: t.replace("PasswordAuthentication no", "PasswordAuthentication yes"))


def _no_backups_unprotected_unmonitored(run: Run) -> None:
    drop(run, BACKUP_JOB)
    vm(run, "loomio").inputs["protection"] = False
    vm(run, "loomio").protect = False
    set_file(run, "lists", "/etc/borgmatic/config.yaml", None)
    edit_file(run, "monitor1", PROMETHEUS, lambda t: t.replace("10.0.1.13:9100", "10.0.1.99:9100"))


def _no_offsite_copy(run: Run) -> None:
    for unit in ("service", "timer"):
        set_file(run, "backup1", f"/etc/systemd/system/hypha-borg-offsite.{unit}", None)


def _staging_vm_gets_ipv6(run: Run) -> None:
    vm(run, "dns").inputs["initialization"]["ipConfigs"][0]["ipv6"] = {"address": "2001:db8:2::53/64"}


def _cluster_firewall_off(run: Run) -> None:
    next(r for r in run.resources if r.type == CLUSTER_FIREWALL).inputs["enabled"] = False


def _over_capacity(run: Run) -> None:
    vm(run, "loomio").inputs["memory"]["dedicated"] = 40960.0
    vm(run, "backup1").inputs["disks"][0]["size"] = 2000.0


def _no_loomio_record_and_no_lists_certificate(run: Run) -> None:
    edit_file(run, "dns", ZONE, lambda z: "\n".join(line for line in z.splitlines() if not line.startswith("loomio ")) + "\n")
    site = "/etc/nginx/sites-enabled/hypha-lists.conf"
    edit_file(run, "web1", site, lambda t: t.replace("ssl_certificate ", "#ssl_certificate "))


def _spf_open_and_no_dmarc(run: Run) -> None:
    def edit(zone: str) -> str:
        zone = zone.replace('"v=spf1 mx -all"', '"v=spf1 mx +all"')
        return "\n".join(line for line in zone.splitlines() if not line.startswith("_dmarc")) + "\n"

    edit_file(run, "dns", ZONE, edit)


def _ignored_change_and_update(run: Run) -> None:
    # The snippet id is in ignore_changes (bpg/terraform-provider-proxmox#1636): the provider never sees it.
    vm(run, "loomio").inputs["initialization"]["userDataFileId"] = "local:snippets/other.yaml"
    vm(run, "loomio").inputs["memory"]["dedicated"] = 8192.0  # an in-place update


def _lists_gone(run: Run) -> None:
    run.resources.remove(vm(run, "lists"))


def _loomio_gets_a_new_id(run: Run) -> None:
    vm(run, "loomio").inputs["vmId"] = 1015.0


def _set(host: str, key: str, value) -> Callable[[Run], None]:
    return lambda run: vm(run, host).inputs.__setitem__(key, value)


def _waits(**waits: str) -> Callable[[Run], None]:
    """The monitoring host's rules file with these alerts' waits, as `monitoring.alert_waits` would write it."""
    return lambda run: edit_file(run, "monitor1", RULES, lambda text: mr.with_waits(text, waits))


LOOMIO_NEW_ID = "prod VM loomio: vmId changed, which replaces the VM; if that is intended, run with HYPHA_ALLOW_REPLACE=loomio"

CASES = [
    # prod SSH only for 2-3 admins
    Case("prod-ssh-admins-only", "the committed prod stack", "prod", None, ()),
    Case("prod-ssh-admins-only", "a key file for someone not in access.admins", "prod", _dave_gets_a_prod_login, (
        "loomio: dave can log in but is not in access.admins; prod logins are for admins only (site.ssh_access: admins)",
    )),
    # no password login, no root login
    Case("no-password-or-root-login", "the committed prod stack", "prod", None, ()),
    Case("no-password-or-root-login", "password login in an sshd file", "prod", _loosen_cloud_init_sshd, (
        f"converge: {SSHD_DROPIN}: `PasswordAuthentication yes`",
        "converge: no sshd file says `PasswordAuthentication no` (Debian's default lets it in)",
    )),
    Case("no-password-or-root-login", "root login in an extra sshd file", "staging",
         lambda run: set_file(run, "dns", "/etc/ssh/sshd_config.d/99-debug.conf", "PermitRootLogin prohibit-password\n"), (
             "converge: /etc/ssh/sshd_config.d/99-debug.conf: `PermitRootLogin prohibit-password`",
         )),
    # every host's SSH identity is the program's, and every SSH leg pins it
    Case("ssh-host-keys-pinned", "the committed prod stack", "prod", None, ()),
    Case("ssh-host-keys-pinned", "the committed staging stack", "staging", None, ()),
    Case("ssh-host-keys-pinned", "a snippet that lets the VM make its own host keys", "prod",
         lambda run: set_user_data(run, "lists", lambda doc: doc.pop("ssh_keys")), (
             "cloud-init: the VM's host keys must be the program's (`ssh_keys` with ed25519_private and "
             "ed25519_public, `ssh_deletekeys: true`); a key the VM makes itself is pinned nowhere",
         )),
    # the deploy key only on the deploy user, bound to the deploy host's address
    Case("deploy-key-bound", "the committed prod stack", "prod", None, ()),
    Case("deploy-key-bound", "the committed staging stack", "staging", None, ()),
    Case("deploy-key-bound", "the deploy key accepted from anywhere, or with no from= at all", "prod", _all(
        lambda run: edit_file(run, "gateway", DEPLOY_KEYS, lambda t: t.replace('from="203.0.113.50"', 'from="0.0.0.0/0"')),
        lambda run: edit_file(run, "web1", DEPLOY_KEYS, lambda t: re.sub(r'from="[^"]*",', "", t)),
    ), (
        "gateway: the deploy key (converge) is accepted from 0.0.0.0/0, not only 203.0.113.50",
        "web1: the deploy key (converge) has no from= option; bind it to 10.0.1.254",
    )),
    # Every member's jumped session arrives from the gateway's LAN address: the previous design.
    Case("deploy-key-bound", "the deploy key on a LAN host accepted from the gateway's own address", "prod",
         lambda run: edit_file(run, "bw1", DEPLOY_KEYS, lambda t: t.replace('from="10.0.1.254"', 'from="10.0.1.12"')), (
             "bw1: the deploy key (converge) is accepted from 10.0.1.12, not only 10.0.1.254",
         )),
    Case("deploy-key-bound", "the deploy key on another account", "prod", _alice_gets_the_deploy_key, (
        "loomio: the deploy key is in /etc/ssh/authorized_keys/alice (converge); it belongs only in /etc/ssh/authorized_keys/deploy",
    )),
    # every prod VM that holds data is protected, backed up and monitored
    Case("data-vms-protected-backed-up-monitored", "staging data VMs need no protection", "staging", None, ()),
    Case("data-vms-protected-backed-up-monitored", "data VMs missing any of the three are named", "prod",
         _no_backups_unprotected_unmonitored, (
             "backup1 holds data but: no proxmoxve:backup/job:Job includes vm id 1007",
             "bw1 holds data but: no proxmoxve:backup/job:Job includes vm id 1003; no monitoring host scrapes 10.0.1.13:9100",
             "lists holds data but: no proxmoxve:backup/job:Job includes vm id 1004; its converge holds no borgmatic config",
             "loomio holds data but: Proxmox protection is off (site.protect_data_vms); the VM resource is not `protect`ed "
             "in Pulumi; no proxmoxve:backup/job:Job includes vm id 1005",
             "monitor1 holds data but: no proxmoxve:backup/job:Job includes vm id 1008",
         )),
    Case("data-vms-protected-backed-up-monitored", "the borg target without its offsite copy", "prod", _no_offsite_copy, (
        "backup1 holds data but: its converge has no offsite copy (backup.offsite)",
    )),
    # what pages keeps paging
    Case("prod-critical-alerts-not-delayed", "the committed prod stack", "prod", None, ()),
    Case("prod-critical-alerts-not-delayed", "a critical alert sooner, a warning later", "prod",
         _waits(InstanceDown="1m", CpuSaturated="2h"), ()),
    Case("prod-critical-alerts-not-delayed", "staging's alerts are staging's business", "staging", _waits(MemoryPressure="1w"), ()),
    Case("prod-critical-alerts-not-delayed", "a critical alert put off for a week", "prod",
         _waits(MemoryPressure="1w", BackupTooOld="15m"), (
             "MemoryPressure is critical and waits 1w on monitor1, longer than its rule's 5m: remove or shorten "
             "monitoring.alert_waits.MemoryPressure",
         )),
    # staging lives on the VPN
    Case("staging-vpn-only", "the committed staging stack", "staging", None, ()),
    # prod VMs with public addresses are not staging's business
    Case("staging-vpn-only", "prod VMs with public addresses", "prod", None, ()),
    Case("staging-vpn-only", "a staging VM with an IPv6 address", "staging", _staging_vm_gets_ipv6, (
        "staging VM has IPv6 address 2001:db8:2::53/64; staging has no public address",
    )),
    # memory, cores and disk within each node's capacity
    Case("node-capacity", "the committed prod stack", "prod", None, ()),
    Case("node-capacity", "VMs asking more memory and disk than the node has", "prod", _over_capacity, (
        "node kvm1: VMs ask for 51200 memory_mb but it offers 45056",
        "node kvm1: VMs ask for 2000 storage.hdd but it offers 1800",
    )),
    # VM ids within the stack's range
    Case("vm-ids-in-range", "the committed prod stack", "prod", None, ()),
    # a staging id in prod: the stacks would collide on the node
    Case("vm-ids-in-range", "a staging id in prod", "prod", _set("bw1", "vmId", 8003.0), (
        "vm id 8003.0 is outside this stack's range 1000-1999 (site.vm_ids)",
    )),
    # every public service has DNS and TLS; the mail domain has SPF and DMARC
    Case("public-services-dns-tls", "the committed prod stack", "prod", None, ()),
    Case("public-services-dns-tls", "the committed staging stack", "staging", None, ()),
    Case("public-services-dns-tls", "a service without its record, another without its certificate", "prod",
         _no_loomio_record_and_no_lists_certificate, (
             "service lists: no reverse proxy serves lists.hypha.coop on 443 with a certificate it asks the ACME CA for",
             "service loomio: loomio.hypha.coop has no A, AAAA or CNAME record in any zone a dns host serves",
         )),
    Case("mail-spf-dmarc", "the committed prod stack", "prod", None, ()),
    Case("mail-spf-dmarc", "the committed staging stack", "staging", None, ()),
    Case("mail-spf-dmarc", "an SPF record that lets anyone send, and no DMARC", "prod", _spf_open_and_no_dmarc, (
        "hypha.coop: SPF `v=spf1 mx +all` does not end in -all or ~all, so anyone may send as the domain",
        "hypha.coop: 0 DMARC records (TXT v=DMARC1 at _dmarc.hypha.coop); exactly one is needed",
    )),
    Case("dmarc-enforced-only-when-signed", "the committed prod stack (quarantine, lists signs)", "prod", None, ()),
    Case("dmarc-enforced-only-when-signed", "the committed staging stack (reject, lists signs)", "staging", None, ()),
    Case("dmarc-enforced-only-when-signed", "quarantine with no OpenDKIM on the mail host", "prod",
         lambda run: set_file(run, "lists", "/etc/opendkim.conf", None), (
             "hypha.coop: DMARC p=quarantine while no host with role mail signs the domain's mail with a key the zone "
             "publishes, so receivers would refuse its own mail; set dns.dmarc.policy: none until one does",
         )),
    # the datacenter firewall
    Case("vm-firewalls-take-effect", "the committed prod stack", "prod", None, ()),
    Case("vm-firewalls-take-effect", "the committed staging stack", "staging", None, ()),
    # 8 VMs with a firewalled NIC and 8 enabled firewall options
    Case("vm-firewalls-take-effect", "VM firewalls with the datacenter firewall off", "staging", _cluster_firewall_off, (
        "16 VM firewall resources are set but no proxmoxve:cluster/firewallLegacy:FirewallLegacy is registered with "
        "enabled: true; Proxmox ignores every VM's firewall while the datacenter firewall is off "
        "(components/cluster_firewall.py)",
    )),
    # no replacement of a prod VM without an allow flag
    Case("prod-vm-no-replacement", "the committed prod stack against its own export", "prod", None, (), baseline=True),
    Case("prod-vm-no-replacement", "an ignored change or an in-place update", "prod", _ignored_change_and_update, (),
         baseline=True),
    Case("prod-vm-no-replacement", "a prod VM gone from the program", "prod", _lists_gone, (
        "prod VM lists: its resource is gone (deleted, or renamed: a new URN is a new VM); "
        "if that is intended, run with HYPHA_ALLOW_REPLACE=lists",
    ), baseline=True),
    Case("prod-vm-no-replacement", "a new vm id", "prod", _loomio_gets_a_new_id, (LOOMIO_NEW_ID,), baseline=True),
    Case("prod-vm-no-replacement", "a new vm id the change allows", "prod", _loomio_gets_a_new_id, (), baseline=True,
         env={"HYPHA_ALLOW_REPLACE": "loomio"}),
    # a prod VM that holds data is removed only after a final backup (more in tests/test_retire_policy.py)
    Case("prod-data-host-removal", "the committed prod stack against its own export", "prod", None, (), baseline=True),
    Case("prod-data-host-removal", "a data VM gone with the replacement allow but no final backup", "prod", _lists_gone, (
        "prod VM lists holds data and would be removed: no final backup is named; run a backup on lists "
        "(`systemctl start hypha-backup`), then name its archive in policy/config.prod.json "
        "(prod-data-host-removal.finalBackups.lists) or HYPHA_FINAL_BACKUP=lists=<archive> "
        "(the removal also needs HYPHA_ALLOW_REPLACE=lists, prod-vm-no-replacement)",
    ), baseline=True, env={"HYPHA_ALLOW_REPLACE": "lists"}),
]
