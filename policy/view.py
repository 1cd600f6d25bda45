"""What the policies read: the registered resources grouped per host, and the files a converge script carries.

The pack judges what the program registers, not the config it came from: a host's files are read
back out of its converge command's stdin and its cloud-init snippet, exactly as they reach the VM.
Facts that only config holds (who the admins are, the node sizes, the VM id range) come from the
stack config the engine hands the pack (`pulumi.Config`), through model/ so nothing is parsed twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Optional

import pulumi
import yaml
from pulumi.runtime.config import CONFIG, get_config_env

from model.load import build_stack
from model.secrets import PROJECT_SECRET_KEYS

from render.wire import parse_stages

VM = "proxmoxve:index/vmLegacy:VmLegacy"
SNIPPET = "proxmoxve:index/fileLegacy:FileLegacy"
COMMAND = "command:remote:Command"
BACKUP_JOB = "proxmoxve:backup/job:Job"
PROXMOX_VM = "hypha:infra:ProxmoxVm"
HOST_BOOTSTRAP = "hypha:infra:HostBootstrap"
PROJECT = "hypha-infra"
AUTHORIZED_KEYS_DIR = "/etc/ssh/authorized_keys/"
DEPLOY_USER = "deploy"


@dataclass(frozen=True)
class CarriedFile:
    """One file as the converge script stages it (or cloud-init writes it)."""

    path: str
    content: str
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"


# Cached per text (callers only read): every stack policy reads every host's files.
@lru_cache(maxsize=256)
def script_files(script: str) -> dict[str, CarriedFile]:
    """The managed files a rendered (or filled) converge script stages, by path (render/wire.py reads them).

    A late value still unfilled (a placeholder) reads as empty text: what it holds is a secret the
    policies have no business reading.
    """
    return {
        s.path: CarriedFile(s.path, s.content(lambda _name: ""), s.mode, s.owner, s.group) for s in parse_stages(script)
    }


@lru_cache(maxsize=256)
def user_data_files(document: str) -> tuple[dict, dict[str, CarriedFile]]:
    """(the parsed #cloud-config, its write_files by path)."""
    try:
        data = yaml.safe_load(document) or {}
    except yaml.YAMLError:
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    files = {}
    for f in data.get("write_files") or []:
        if isinstance(f, dict) and "path" in f:
            owner, _, group = str(f.get("owner", "root:root")).partition(":")
            files[f["path"]] = CarriedFile(f["path"], str(f.get("content", "")), str(f.get("permissions", "0644")), owner, group or owner)
    return data, files


@dataclass
class HostView:
    """One catalog host: its VM, its cloud-init snippet and its converge command."""

    name: str
    vm: Any = None
    snippet: Any = None
    converge: Any = None

    @property
    def tags(self) -> list[str]:
        return list(self.vm.props.get("tags") or []) if self.vm else []

    @property
    def vm_id(self) -> Optional[int]:
        v = self.vm.props.get("vmId") if self.vm else None
        return int(v) if v is not None else None

    @property
    def lan_ip(self) -> Optional[str]:
        """The first network device's IPv4 address (the LAN, by ProxmoxVm's device order)."""
        configs = (self.vm.props.get("initialization") or {}).get("ipConfigs") or [] if self.vm else []
        addr = ((configs[0] or {}).get("ipv4") or {}).get("address") if configs else None
        return addr.split("/")[0] if addr else None

    @property
    def user_data(self) -> dict:
        return user_data_files(_snippet_text(self.snippet))[0] if self.snippet else {}

    @property
    def snippet_files(self) -> dict[str, CarriedFile]:
        return user_data_files(_snippet_text(self.snippet))[1] if self.snippet else {}

    @property
    def script(self) -> str:
        return str(self.converge.props.get("stdin") or "") if self.converge else ""

    @property
    def converge_files(self) -> dict[str, CarriedFile]:
        return script_files(self.script)

    def all_files(self) -> list[tuple[str, CarriedFile]]:
        """(where, file) for every file cloud-init writes and the converge stages."""
        return [("cloud-init", f) for f in self.snippet_files.values()] + [
            ("converge", f) for f in self.converge_files.values()
        ]


# How Pulumi's wire format marks a secret (pulumi.runtime.rpc). Under the engine the pack gets
# secrets unwrapped (pulumi_policy/deserialize.py, SPECIAL_SECRET_SIG); in-process runs keep it.
_SIG_KEY, _SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def revealed(value: Any) -> Any:
    """A prop as a policy reads it: a secret (the snippet holds host keys) without its wire marker."""
    if isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG:
        return value.get("value")
    return value


def snippet_text(props: dict) -> str:
    return str((revealed(props.get("sourceRaw")) or {}).get("data") or "")


def _snippet_text(snippet) -> str:
    return snippet_text(snippet.props)


def hosts(resources: Iterable) -> dict[str, HostView]:
    """Hosts by name, from the component each resource sits in (ProxmoxVm, HostBootstrap)."""
    out: dict[str, HostView] = {}
    for r in resources:
        parent = getattr(r, "parent", None)
        if parent is None:
            continue
        if parent.resource_type == PROXMOX_VM and r.resource_type == VM:
            out.setdefault(parent.name, HostView(parent.name)).vm = r
        elif parent.resource_type == PROXMOX_VM and r.resource_type == SNIPPET:
            out.setdefault(parent.name, HostView(parent.name)).snippet = r
        elif parent.resource_type == HOST_BOOTSTRAP and r.resource_type == COMMAND and r.name == f"{parent.name}-converge":
            # (a LAN host's component also holds `<host>-ready`, the gateway's probe: no files)
            out.setdefault(parent.name, HostView(parent.name)).converge = r
    return out


def with_tag(views: dict[str, HostView], tag: str) -> list[HostView]:
    return [v for _, v in sorted(views.items()) if tag in v.tags]


# ---------------------------------------------------------------------------------------------------
# The stack config as the engine hands it to the pack.


def stack_raw() -> dict[str, Any]:
    """Every `hypha-infra:*` key of the stack config, parsed (the engine passes them in PULUMI_CONFIG)."""
    keys = set(CONFIG.get()) | set(get_config_env())
    cfg = pulumi.Config(PROJECT)
    raw = {}
    for key in sorted(k.split(":", 1)[1] for k in keys if k.startswith(f"{PROJECT}:")):
        if key in PROJECT_SECRET_KEYS:
            continue  # a secret; no policy reads it
        value = cfg.get_object(key)
        if value is not None:
            raw[key] = value
    return raw


def stack_model():
    """The validated stack model (model/), built from the config the engine handed the pack."""
    raw = stack_raw()
    return _model(yaml.safe_dump(raw, sort_keys=True), (raw.get("site") or {}).get("stack", ""))


@lru_cache(maxsize=8)
def _model(raw_yaml: str, name: str):
    return build_stack(yaml.safe_load(raw_yaml), name)


def env_list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").replace(",", " ").split() if x.strip()]


@dataclass
class Problems:
    """Collects violation messages for one policy so each is reported once, in a stable order."""

    items: list[tuple[str, Optional[str]]] = field(default_factory=list)

    def add(self, message: str, urn: Optional[str] = None) -> None:
        if (message, urn) not in self.items:
            self.items.append((message, urn))
