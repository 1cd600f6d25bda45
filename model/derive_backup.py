"""What follows from a valid stack's `backup` section (model/backup.py): which host is the target, who
is a client, what each client backs up, where its repository lives and how much it may hold.

One answer for the renderer, the firewall (model/derive.py), the restore drill and the checks.
"""

from __future__ import annotations

from typing import Optional

from . import facts
from .backup import Database

# borgmatic's dump hook per engine (borgmatic 1.7 config key under `hooks:`).
DUMP_HOOKS = {"postgresql": "postgresql_databases", "mysql": "mysql_databases", "mariadb": "mysql_databases"}
BORG_USER = "borg"
# The units of model/backup.py's Size: borg's own size syntax (helpers.parse_file_size: decimal
# K/M/G/T), limited to what a quota needs.
SIZE_UNITS = {"M": 10**6, "G": 10**9, "T": 10**12}


def size_bytes(size: str) -> int:
    """A checked size (`100G`) in bytes, as borg serve --storage-quota reads it."""
    return int(size[:-1]) * SIZE_UNITS[size[-1]]


def target_name(stack) -> Optional[str]:
    """The borg target: `backup.target`, else the one host with role `backup_target`."""
    return facts.backup_target(stack.backup, stack.hosts)


def clients(stack) -> list[str]:
    """Hosts backed up with borg: every host holding data except the target itself."""
    if stack.backup is None:
        return []
    return facts.backup_clients(stack.hosts, stack.services, target_name(stack))


def kept(stack) -> list[str]:
    """Removed hosts whose repository stays readable on the target: a retired service still names
    the host and declares data (`data_paths` or `databases`). The target keeps the repository's
    passphrase (the same generated secret) so an admin can list and extract its archives; nothing
    writes to it any more, and it is neither pruned nor drilled (its canary only ages). Dropping the
    retired entry's data (or the entry) once `backup.retention` has passed lets the passphrase go:
    delete the repository directory then."""
    if stack.backup is None:
        return []
    return sorted({s.host for s in stack.services.values()
                   if s.retired is not None and s.host not in stack.hosts and (s.data_paths or s.databases)})


def client_paths(stack, host: str) -> list[str]:
    """Directories a client backs up: its services' data_paths and backup.extra_paths, each once."""
    paths = [p for s in facts.services_on(stack.services, host).values() for p in s.data_paths]
    paths += stack.backup.extra_paths.get(host, []) if stack.backup else []
    return sorted(set(paths))


def client_databases(stack, host: str) -> list[tuple[str, Database]]:
    """(service, database) pairs a client dumps into each backup."""
    return [(n, d) for n, s in sorted(facts.services_on(stack.services, host).items()) for d in s.databases]


def quota(backup, client: str) -> str:
    """The storage quota of `client`'s repository (`100G`)."""
    return backup.storage_quotas.get(client, backup.storage_quota)


def repository(stack, client: str) -> str:
    return f"{stack.backup.repository_dir.rstrip('/')}/{client}"


def ssh_logins(stack, host: str) -> list[str]:
    """Accounts other than people and deploy that sshd must let in on `host`: `borg` on the target."""
    return [BORG_USER] if clients(stack) and host == target_name(stack) else []
