"""The `backup` section: borg target, retention, offsite copy, restore drill and Proxmox image backups.

Also what follows from it (which host is the target, who is a client, what each client backs up),
so the renderer, the firewall and the checks agree on one answer.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, field_validator

from .base import _Model
from .errors import Problem
from .keys import check_public_key
from .types import (
    AbsolutePath,
    CalendarEvent,
    DatabaseName,
    Flag,
    HostName,
    HostOrAddress,
    Identifier,
    Port,
    pattern_type,
    PveStorage,
    RemoteUser,
    SshPublicKey,
    Text,
    unique_items,
    whole,
)

# borgmatic's dump hook per engine (borgmatic 1.7 config key under `hooks:`).
DUMP_HOOKS = {"postgresql": "postgresql_databases", "mysql": "mysql_databases", "mariadb": "mysql_databases"}
BORG_USER = "borg"
# borg's own size syntax (helpers.parse_file_size: decimal K/M/G/T), limited to what a quota needs.
_SIZE_UNITS = {"M": 10**6, "G": 10**9, "T": 10**12}
Size = pattern_type("size", r"[1-9][0-9]{0,5}[MGT]", "is not a size such as 500M, 100G or 2T (decimal units, as borg reads them)", max_length=32)


def size_bytes(size: str) -> int:
    """A checked size (`100G`) in bytes, as borg serve --storage-quota reads it."""
    return int(size[:-1]) * _SIZE_UNITS[size[-1]]


class Database(_Model):
    engine: Identifier = Field(description="Database engine; dumped by borgmatic's hook for it (`postgresql`, `mysql`).")
    name: DatabaseName = Field(description="Database name (`all` for every database of the server).")


class Retention(_Model):
    daily: whole(ge=0, le=100_000) = Field(default=7, description="Daily archives kept (the last of each day).")
    weekly: whole(ge=0, le=100_000) = Field(default=4, description="Weekly archives kept beyond the daily ones.")
    monthly: whole(ge=0, le=100_000) = Field(default=3, description="Monthly archives kept beyond the weekly ones.")


class SshTarget(_Model):
    """An SSH server outside the stack that something is copied to, its host key pinned: the
    backup target's offsite copy, the monitoring host's status page (model/monitoring.py)."""

    host: HostOrAddress = Field(description="Address or DNS name of the offsite SSH server (outside the stack).")
    port: Port = Field(default=22, description="Its SSH port.")
    user: RemoteUser = Field(description="Login on the offsite server.")
    path: AbsolutePath = Field(description="Absolute directory on the offsite server.")
    host_key: SshPublicKey = Field(
        description="The offsite server's SSH host public key (`ssh-ed25519 AAAA...`), pinned: the copy refuses any other."
    )

    _host_key = field_validator("host_key")(check_public_key)


class Offsite(SshTarget):
    user: RemoteUser = Field(description="Login on the offsite server; its authorized_keys holds the output `backup_offsite_public_key`.")
    path: AbsolutePath = Field(description="Absolute directory on the offsite server; each repository is copied to `<path>/<client>`.")
    schedule: CalendarEvent = Field(default="*-*-* 05:30", description="When the copy runs (systemd calendar event, on the target).")
    keep_days: whole(ge=1, le=3650) = Field(
        default=30,
        description="Each copy is a new dated snapshot (`<path>/<client>/<UTC time>`, unchanged files hardlinked to the "
        "previous one); snapshots older than this many days are removed. The history a client cannot reach.",
    )


class ImageBackups(_Model):
    storage: PveStorage = Field(description="Proxmox storage the images are written to (a `backup` content storage).")
    # Proxmox's job schedules are systemd calendar events (a subset; pve-common PVE/CalendarEvent.pm),
    # so systemd's parser is the nearest check available off the node.
    schedule: CalendarEvent = Field(default="sun 01:30", description="When vzdump runs (Proxmox calendar event).")
    mode: Literal["snapshot", "suspend", "stop"] = Field(default="snapshot", description="vzdump mode.")
    compress: Literal["zstd", "lzo", "gzip", "0"] = Field(default="zstd", description="Image compression.")
    keep_last: whole(ge=0, le=100_000) = Field(default=0, description="Images kept regardless of age.")
    keep_daily: whole(ge=0, le=100_000) = Field(default=0, description="Daily images kept.")
    keep_weekly: whole(ge=0, le=100_000) = Field(default=2, description="Weekly images kept.")
    keep_monthly: whole(ge=0, le=100_000) = Field(default=1, description="Monthly images kept.")
    enabled: Flag = Field(default=True, description="Whether Proxmox runs the job.")


class Backup(_Model):
    """Backups of every host that holds data."""

    target: Optional[HostName] = Field(
        default=None, description="The borg target host; default the one host with role `backup_target`."
    )
    repository_dir: AbsolutePath = Field(default="/srv/borg", description="Directory on the target holding one repository per client.")
    schedule: CalendarEvent = Field(default="*-*-* 01:15", description="When each client backs up (systemd calendar event; up to 20 min later, randomised).")
    prune_schedule: CalendarEvent = Field(default="*-*-* 04:00", description="When the target prunes and compacts every repository.")
    drill_schedule: CalendarEvent = Field(default="*-*-* 06:30", description="When the target's restore drill runs.")
    retention: Retention = Field(default_factory=Retention, description="How many archives pruning keeps.")
    extra_paths: dict[HostName, Annotated[list[AbsolutePath], AfterValidator(unique_items)]] = Field(
        default_factory=dict,
        description="More directories to back up per client host (besides its services' `data_paths`), e.g. `/etc`.",
    )
    exclude_patterns: list[Text] = Field(
        default_factory=lambda: ["*.tmp", "*/cache/*"], description="borg exclude patterns applied on every client."
    )
    storage_quota: Size = Field(
        default="100G",
        description="Most each client's repository may hold (borg serve --storage-quota in its forced command); "
        "a client past it cannot commit, the others are unaffected. The quotas together must fit the target's disk.",
    )
    storage_quotas: dict[HostName, Size] = Field(
        default_factory=dict, description="Per client host, a quota other than `storage_quota` (e.g. `loomio: 300G`)."
    )
    canary_max_age_hours: whole(ge=1, le=100_000) = Field(
        default=26, description="The drill fails when the restored canary is older than this."
    )
    offsite: Optional[Offsite] = Field(default=None, description="Where the target copies every repository to.")
    images: Optional[ImageBackups] = Field(default=None, description="The stack's Proxmox whole-VM image backup job.")


# --- what follows from the section ------------------------------------------------------------------


def target_name(stack) -> Optional[str]:
    """The borg target: `backup.target`, else the one host with role `backup_target`."""
    if stack.backup is None:
        return None
    if stack.backup.target:
        return stack.backup.target
    targets = sorted(n for n, h in stack.hosts.items() if "backup_target" in h.roles)
    return targets[0] if len(targets) == 1 else None


def clients(stack) -> list[str]:
    """Hosts backed up with borg: every host holding data except the target itself.

    The target's own state is the repositories, copied offsite; backing it up to itself would
    protect nothing, and its config is rebuilt by a converge.
    """
    from .derive import holds_data

    if stack.backup is None:
        return []
    target = target_name(stack)
    return sorted(n for n in stack.hosts if n != target and holds_data(stack, n))


def client_paths(stack, host: str) -> list[str]:
    """Directories a client backs up: its services' data_paths and backup.extra_paths, each once."""
    paths = [p for s in _services_on(stack.services, host).values() for p in s.data_paths]
    paths += stack.backup.extra_paths.get(host, []) if stack.backup else []
    return sorted(set(paths))


def client_databases(stack, host: str) -> list[tuple[str, Database]]:
    """(service, database) pairs a client dumps into each backup."""
    return [(n, d) for n, s in sorted(_services_on(stack.services, host).items()) for d in s.databases]


def quota(backup, client: str) -> str:
    """The storage quota of `client`'s repository (`100G`)."""
    return backup.storage_quotas.get(client, backup.storage_quota)


def repository(stack, client: str) -> str:
    return f"{stack.backup.repository_dir.rstrip('/')}/{client}"


def ssh_logins(stack, host: str) -> list[str]:
    """Accounts other than people and deploy that sshd must let in on `host`: `borg` on the target."""
    return [BORG_USER] if clients(stack) and host == target_name(stack) else []


def inbound_rules(stack, host: str) -> list:
    """Firewall allow rules (model.derive.Rule) this section adds to `host`: borg over SSH from each client to the target."""
    from .derive import Rule

    if host != target_name(stack):
        return []
    return [Rule("tcp", 22, f"{stack.hosts[c].lan_ip}/32", f"borg from {c}") for c in clients(stack)]


def _services_on(services: dict, host: str) -> dict:
    return {n: s for n, s in services.items() if s.host == host}


# --- checks ------------------------------------------------------------------------------------------


def check_backup(backup, site, hosts, services) -> list[Problem]:
    """Cross-field checks of the backup section against hosts and services."""
    out: list[Problem] = []
    add = lambda path, msg: out.append(Problem(path, msg))  # noqa: E731

    # A database needs a hook that dumps it, whether or not the section is there: a declared
    # database that nothing can dump would be silently missing from every backup.
    for name, svc in sorted(services.items()):
        for i, db in enumerate(svc.databases):
            path = f"services.{name}.databases[{i}]"
            if db.engine not in DUMP_HOOKS:
                add(
                    f"{path}.engine",
                    f"{db.engine!r} has no borgmatic dump hook; supported: {', '.join(sorted(DUMP_HOOKS))} "
                    "(keep other engines' files under the service's data_paths, stopped or snapshotted)",
                )
    if backup is None:
        return out

    # Paths are absolute and normalised by their type (model/types.py AbsolutePath).
    r = backup.retention
    if r.daily + r.weekly + r.monthly == 0:
        add("backup.retention", "keeps nothing (daily, weekly and monthly are all 0), so pruning would delete every archive; "
            "keep at least one (the default is daily 7, weekly 4, monthly 3)")
    if backup.images is not None:
        im = backup.images
        if im.keep_last + im.keep_daily + im.keep_weekly + im.keep_monthly == 0:
            add("backup.images", "keeps no image (every keep_* is 0); set keep_weekly or another keep_* above 0")
    for i, pattern in enumerate(backup.exclude_patterns):
        if not pattern.strip():
            add(f"backup.exclude_patterns[{i}]", "is empty; remove it")

    # Who is the target, and does every client have one.
    targets = sorted(n for n, h in hosts.items() if "backup_target" in h.roles)
    target = backup.target
    if target is not None:
        if target not in hosts:
            add("backup.target", f"unknown host {target!r}; known hosts: {', '.join(sorted(hosts)) or 'none'}")
            target = None
        elif "backup_target" not in hosts[target].roles:
            add("backup.target", f"{target!r} has no `backup_target` role; add the role to hosts.{target}.roles")
    elif len(targets) > 1:
        add("backup.target", f"several hosts have role `backup_target` ({', '.join(targets)}); name the one to use here")
    else:
        target = targets[0] if targets else None

    def holds(h: str) -> bool:
        return hosts[h].holds_data or any(s.data_paths or s.databases for s in _services_on(services, h).values())

    data_hosts = sorted(h for h in hosts if h != target and holds(h))
    if data_hosts and target is None and not (backup.target and backup.target not in hosts):
        add(
            "backup.target",
            f"no backup target for the hosts that hold data ({', '.join(data_hosts)}); "
            "give a host the `backup_target` role or name one here",
        )
    for host in sorted(backup.storage_quotas):
        if host not in data_hosts:
            why = "is not a host" if host not in hosts else ("is the backup target" if host == target else "holds no data")
            add(f"backup.storage_quotas.{host}", f"{host} {why}, so it has no repository; remove the entry")
    if target is not None and data_hosts:
        total = sum(size_bytes(quota(backup, h)) for h in data_hosts)
        disk = hosts[target].disk_gb * 2**30
        if total > disk:
            add("backup.storage_quota", f"the quotas of {len(data_hosts)} repositories add up to {total / 10**9:.0f} GB, "
                f"more than {target}'s {hosts[target].disk_gb} GiB disk: one client could fill the target for all; "
                f"lower storage_quota / storage_quotas or grow hosts.{target}.disk_gb")
    for host, paths in sorted(backup.extra_paths.items()):
        if host not in hosts:
            add(f"backup.extra_paths.{host}", f"unknown host {host!r}; known hosts: {', '.join(sorted(hosts)) or 'none'}")
        elif host not in data_hosts:
            why = "is the backup target" if host == target else "holds no data"
            add(f"backup.extra_paths.{host}", f"{host} {why}, so it is not a backup client; remove the entry "
                f"(or set hosts.{host}.holds_data)")
    return out
