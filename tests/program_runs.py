"""Both stacks' program runs under mocks, done once per test session and shared by the test modules."""

from __future__ import annotations

import copy
from functools import lru_cache

import yaml

from ops.mockrun import Registered, Run, plain, run_stack
from model.load import load_stack, read_stack_config

STACKS = ("staging", "prod")

VM = "proxmoxve:index/vmLegacy:VmLegacy"
SNIPPET = "proxmoxve:index/fileLegacy:FileLegacy"
FW_OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"
FW_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
CLUSTER_FIREWALL = "proxmoxve:cluster/firewallLegacy:FirewallLegacy"
PROXMOX_VM = "hypha:infra:ProxmoxVm"
GATEWAY = "hypha:infra:Gateway"


@lru_cache(maxsize=None)
def run(stack: str) -> Run:
    return run_stack(stack)


@lru_cache(maxsize=None)
def model(stack: str):
    return load_stack(stack)


def raw(stack: str) -> dict:
    return copy.deepcopy(read_stack_config(stack))


def component(r: Run, host: str) -> Registered:
    return next(x for x in r.of_type(PROXMOX_VM) if x.name == host)


def child(r: Run, host: str, type_: str) -> Registered:
    kids = [x for x in r.children(component(r, host)) if x.type == type_]
    assert len(kids) == 1, f"{host}: expected one {type_}, found {len(kids)}"
    return kids[0]


def snippet_source(res: Registered) -> dict:
    """A snippet's `sourceRaw` (fileName, data); on the wire it is a secret, for the host keys in it."""
    return plain(res.inputs["sourceRaw"])


def user_data(r: Run, host: str) -> dict:
    return yaml.safe_load(snippet_source(child(r, host, SNIPPET))["data"])


def written_files(r: Run, host: str) -> dict[str, dict]:
    """cloud-init's write_files entries by path."""
    return {f["path"]: f for f in user_data(r, host)["write_files"]}


def authorized_keys(r: Run, host: str) -> dict[str, list[str]]:
    """Login name -> key lines, from the root-owned key files cloud-init writes."""
    prefix = "/etc/ssh/authorized_keys/"
    return {
        path.removeprefix(prefix): f["content"].splitlines()
        for path, f in written_files(r, host).items()
        if path.startswith(prefix)
    }
