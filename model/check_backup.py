"""Checks of the `backup` section (model/backup.py) against hosts and services: a target every client
reaches, quotas that fit its disk, databases a hook can dump, entries only for real clients.
"""

from __future__ import annotations

from . import facts
from .derive_backup import DUMP_HOOKS, quota, size_bytes
from .errors import Problem


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
    targets = facts.hosts_with_role(hosts, "backup_target")
    target = facts.backup_target(backup, hosts)
    if backup.target is not None:
        if target not in hosts:
            add("backup.target", f"unknown host {target!r}; known hosts: {', '.join(sorted(hosts)) or 'none'}")
            target = None
        elif "backup_target" not in hosts[target].roles:
            add("backup.target", f"{target!r} has no `backup_target` role; add the role to hosts.{target}.roles")
    elif len(targets) > 1:
        add("backup.target", f"several hosts have role `backup_target` ({', '.join(targets)}); name the one to use here")

    data_hosts = facts.backup_clients(hosts, services, target)
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
