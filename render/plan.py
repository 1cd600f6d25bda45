"""The plan types every role fills in: ManagedFile, Account, DeriveStep, HostPlan, late values, and
the Role a render/roles/ module exports (with what it publishes for other roles: Record, Scrape, Probe).

A host's plan is the one desired state: cloud-init seeds the access files from it, the converge
script (render/converge.py) applies all of it, the drift check compares hosts against it, and the
policy pack reads it back out of what the program registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from model.stack import Stack

from .wire import LATE_MARK, check_name, late  # noqa: F401 (late, LATE_MARK re-exported: the roles' one import)


# A value known only when the program runs (a generated secret, a public key Pulumi makes), put in
# a file's content by `late()`. The rendered script carries a placeholder; `render.converge.fill`
# puts the value in on its way to the host (on stdin, never a command line), so no rendered file,
# test fixture or drift report ever holds a secret in clear. Both marks are render/wire.py's.
def late_names(content: str) -> list[str]:
    return LATE_MARK.findall(content)


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    unit: Optional[str] = None
    """systemd unit that must pick up a change to this file."""
    action: str = "reload"
    """`reload` (reload-or-restart) or `restart`."""
    check: Optional[str] = None
    """Name of the daemon's own checker the converge script runs on the staged file."""

    def __post_init__(self):
        check_name(self.check, self.path)  # a misspelt checker fails here, at render time

    @property
    def late(self) -> list[str]:
        """Names of the late values in the content (see `late()`); empty for most files."""
        return late_names(self.content)

    def pieces(self) -> list[tuple[bool, str]]:
        """The content as (is_late, text-or-name) pieces, in order."""
        parts = LATE_MARK.split(self.content)
        return [(i % 2 == 1, p) for i, p in enumerate(parts) if p or i % 2 == 1]


@dataclass(frozen=True)
class Account:
    name: str
    gecos: str
    sudo: bool


@dataclass(frozen=True)
class DeriveStep:
    """A command the converge runs after swapping files and before reloading units: it derives a
    live file from a managed one (e.g. a zone with its serial). Output starting `changed` means
    `unit` must be reloaded."""

    description: str
    command: str
    """Shell code, a render.quote.Shell (the converge template pastes it as code)."""
    unit: str


@dataclass
class HostPlan:
    host: str
    files: list[ManagedFile] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    """Units that must be enabled and running."""
    people: list[Account] = field(default_factory=list)
    """Login accounts; people in PEOPLE_GROUP who are not listed here get locked."""
    derive: list[DeriveStep] = field(default_factory=list)
    absent: list[tuple[str, str]] = field(default_factory=list)
    """(path, unit): paths that must not exist (e.g. a package's default site), removed like a managed file."""
    prepare: list[str] = field(default_factory=list)
    """Shell run before the checks (things the checked config refers to, e.g. placeholder certificates)."""
    finish: list[str] = field(default_factory=list)
    """Shell run after the reloads (e.g. asking the ACME CA for certificates nginx now answers for)."""


@dataclass(frozen=True)
class LateValue:
    """A kind of late value a role asks for, made by components/late.py from this declaration alone.

    `pattern` is a regular expression the whole name must match (e.g. `borg/passphrase/(?P<owner>[a-z0-9-]+)`);
    `kind` says how it is made (components/late.py's KINDS). `source` names the Pulumi config
    secret of kind `config-secret`, and `encode(stack, text)` how its text goes into the file.
    The generated kinds name their Pulumi resource by `resource` (a format over the pattern's named
    groups: a private and a public half naming one resource share it) under the component `parent`;
    these names are part of every resource's URN, so changing one replaces the resource.
    """

    pattern: str
    kind: str
    source: Optional[str] = None
    encode: Optional[Callable[[Stack, str], str]] = None
    resource: Optional[str] = None
    parent: Optional[str] = None


@dataclass(frozen=True)
class Record:
    """One resource record: absolute owner name (no trailing dot), type, data in zone-file syntax, TTL."""

    name: str
    type: str
    data: str
    ttl: int


@dataclass(frozen=True)
class Scrape:
    """A Prometheus scrape job of one target, labelled as `host`'s (plus `labels`)."""

    job: str
    host: str
    target: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Probe:
    """A blackbox probe: `module` against `target`, shown as `url`; the probes of one `job` share a job."""

    job: str
    host: str
    module: str
    target: str
    url: str
    service: str


@dataclass(frozen=True)
class Role:
    """What one render/roles/ module exports as `ROLE`: its name, how it fills a host's plan, and what
    it needs from the other layers, as data."""

    name: str
    contribute: Callable[[Stack, str, HostPlan], None]
    """Adds the role's files, packages, units and steps to the plan of `host`."""
    late: tuple[LateValue, ...] = ()
    """The late values its files ask for (components make them generically)."""
    bare_units: tuple[str, ...] = ()
    """Units its converge enables that a bare lab host must start with off (like a fresh VM's)."""
    packages: tuple[str, ...] = ()
    """Debian packages its converge may install (a superset: the lab machine needs them all, Makefile APT_PACKAGES)."""
    # What it publishes for the roles that gather them (render/gather.py), so neither side names the other:
    zone_records: Optional[Callable[[Stack], list[Record]]] = None
    """Records for the managed zone (the dns role's zone file)."""
    scrapes: Optional[Callable[[Stack], list[Scrape]]] = None
    """Exporters for the monitoring host to scrape."""
    probes: Optional[Callable[[Stack], list[Probe]]] = None
    """Blackbox probes for the monitoring host to run."""
    alert_rules: Optional[Callable[[Stack], str]] = None
    """Alert groups, as more items of the rules file's `groups:` list."""
    blackbox_modules: Optional[Callable[[Stack, bool], str]] = None
    """Blackbox modules its probes name, as more entries of `modules:` (the bool: verify certificates)."""
