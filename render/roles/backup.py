"""The backup_target role (borg repositories, prune, offsite copy, drill) and every data host's borgmatic client.

Secrets never appear here: passphrases and private keys are `late()` placeholders, filled on the
way to the host's stdin (components/late.py makes them from LATE below).
"""

from __future__ import annotations

import json

from model import derive_backup as backup_model
from model.stack import Stack

from .. import hostkeys, metrics, quote
from ..plan import HostPlan, LateValue, ManagedFile, Role, late
from ..templates import TEMPLATES, render, render_shell

BORG_USER = backup_model.BORG_USER
STATE_DIR = "/var/lib/hypha-backup"
TOOLS_DIR = "/usr/local/lib/hypha-backup"

# --- client side ---
BORGMATIC_CONFIG = "/etc/borgmatic/config.yaml"
"""Debian's default path, so `borgmatic list` / `borgmatic extract` work by hand without -c."""
CLIENT_PASSPHRASE = "/etc/borgmatic/passphrase"
CLIENT_KEY = "/etc/borgmatic/ssh/id_ed25519"
CLIENT_KNOWN_HOSTS = "/etc/borgmatic/ssh/known_hosts"
CANARY_DIR = f"{STATE_DIR}/canary"
CANARY = f"{CANARY_DIR}/canary"
HOOK = f"{TOOLS_DIR}/backup-hook"
CLIENT_UNIT = "hypha-backup"
CLIENT_PACKAGES = ["borgbackup", "borgmatic"]
ENCRYPTION = "repokey-blake2"

# --- target side ---
TARGET_CONFIG = "/etc/hypha-backup/target.json"
PASSPHRASE_DIR = "/etc/hypha-backup/passphrases"
OFFSITE_KEY = "/etc/hypha-backup/offsite/id_ed25519"
OFFSITE_KNOWN_HOSTS = "/etc/hypha-backup/offsite/known_hosts"
TARGET_TOOL = f"{TOOLS_DIR}/borg-target"
BORG_HOME = f"{STATE_DIR}/borg-home"
DRILL_DIR = f"{STATE_DIR}/drill"
DRILL_STATUS = f"{STATE_DIR}/drill-status.json"
ARCHIVE_STATE_DIR = f"{STATE_DIR}/archives"
AUTHORIZED_KEYS = f"/etc/ssh/authorized_keys/{BORG_USER}"
TARGET_PACKAGES = ["borgbackup", "rsync", "python3"]
# name -> (what it does, schedule field of the backup section or None for a fixed interval)
TARGET_JOBS = {
    "watch": "verify every repository against its last verified state (client-side deletes roll back)",
    "prune": "prune and compact every repository (retention from config)",
    "offsite": "copy every repository to the offsite server",
    "drill": "restore drill: extract the latest archive of every repository and check it",
    "metrics": "repository sizes and free space for Prometheus",
}
METRICS_INTERVAL = "15min"
# Often enough that a new archive is recorded minutes after it arrives (the verification replays the
# log since the last run anyway, so nothing in between escapes it); cheap: a borg list per repository.
WATCH_INTERVAL = "5min"
ARCHIVE_TIME_SLACK_SECONDS = 600
"""How far an archive's own timestamp may lie outside the time it could have been made (clock skew)."""


def late_names_for(stack: Stack, host: str) -> list[str]:
    """The `borg/...` late values a host's files need (for docs and tests)."""
    if host in backup_model.clients(stack):
        return [f"borg/passphrase/{host}", f"borg/ssh-key/{host}"]
    if host == backup_model.target_name(stack) and (backup_model.clients(stack) or backup_model.kept(stack)):
        names = [f"borg/passphrase/{c}" for c in backup_model.clients(stack)] + [f"borg/ssh-pubkey/{c}" for c in backup_model.clients(stack)]
        names += [f"borg/passphrase/{c}" for c in backup_model.kept(stack)]
        if stack.backup.offsite is not None:
            names.append("borg/offsite/ssh-key")
        return names
    return []


def target_unit(job: str) -> str:
    """The systemd unit (service and timer) of one of the target's jobs (prune, offsite, drill, metrics)."""
    return f"hypha-borg-{job}"


def repository_url(stack: Stack, client: str) -> str:
    target = backup_model.target_name(stack)
    return f"ssh://{BORG_USER}@{stack.hosts[target].lan_ip}{backup_model.repository(stack, client)}"


def dump_paths(stack: Stack, host: str) -> list[str]:
    """Where borgmatic 1.7 puts each database dump inside an archive (root's ~/.borgmatic, local socket)."""
    return [
        f"root/.borgmatic/{backup_model.DUMP_HOOKS[db.engine]}/localhost/{db.name}"
        for _svc, db in backup_model.client_databases(stack, host)
        if db.engine in backup_model.DUMP_HOOKS
    ]


def borgmatic_config(stack: Stack, host: str) -> str:
    """The client's borgmatic 1.7 config; the passphrase is read from a root-only file, never inlined."""
    dbs: dict[str, list[dict]] = {}
    for _svc, db in backup_model.client_databases(stack, host):
        hook = backup_model.DUMP_HOOKS[db.engine]
        entry = {"name": db.name}
        if hook == "postgresql_databases":
            # Debian's PostgreSQL trusts the postgres account over the local socket (peer auth);
            # borgmatic runs as root and writes the dump itself, so only pg_dump runs as postgres.
            # (borgmatic runs the dump command through a shell; its restore commands it does not, so
            # a restore is pg_restore run as postgres by hand: README, Backups.)
            entry["pg_dump_command"] = "runuser -u postgres -- pg_dumpall" if db.name == "all" else "runuser -u postgres -- pg_dump"
        dbs.setdefault(hook, []).append(entry)
    return render(
        "backup_client/borgmatic.yaml.j2",
        host=host,
        target=backup_model.target_name(stack),
        sources=[CANARY_DIR, *backup_model.client_paths(stack, host)],
        repository=repository_url(stack, host),
        excludes=stack.backup.exclude_patterns,
        passphrase_file=CLIENT_PASSPHRASE,
        ssh_command=ssh_command(),
        hook=HOOK,
        databases=dbs,
    )


def ssh_command() -> str:
    # The target's host key is the program's (render/hostkeys.py), pinned in a managed file of our
    # own: another key is refused, never learnt.
    return (
        f"ssh -i {CLIENT_KEY} -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=20 "
        f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={CLIENT_KNOWN_HOSTS} "
        "-o ServerAliveInterval=30 -o ServerAliveCountMax=4"
    )


def backup_client(stack: Stack, host: str, plan: HostPlan) -> None:
    """borgmatic on every host that holds data (all but the target): config, secrets, hook, timer."""
    if host not in backup_model.clients(stack):
        return
    b = stack.backup
    target = backup_model.target_name(stack)
    plan.files += [
        ManagedFile(BORGMATIC_CONFIG, borgmatic_config(stack, host), mode="0600", check="borgmatic"),
        ManagedFile(CLIENT_PASSPHRASE, late(f"borg/passphrase/{host}") + "\n", mode="0600"),
        ManagedFile(CLIENT_KEY, late(f"borg/ssh-key/{host}"), mode="0600", check="ssh_private_key"),
        # The target's pinned key, at the address the repository URL names (the late value ends in a newline).
        ManagedFile(CLIENT_KNOWN_HOSTS, f"{stack.hosts[target].lan_ip} "
                    + late(hostkeys.late_name(target, hostkeys.PIN_TYPE, "public")), check="known_hosts"),
        ManagedFile(
            HOOK,
            render(
                "backup_client/backup-hook.sh.j2",
                host=host, state=STATE_DIR, canary=CANARY, textfile_dir=metrics.TEXTFILE_DIR,
                metric=metrics.BACKUP_LAST_SUCCESS,
            ),
            mode="0755",
            check="shell",
        ),
        ManagedFile(
            f"/etc/systemd/system/{CLIENT_UNIT}.service",
            render("backup_client/hypha-backup.service.j2", target=target, config=BORGMATIC_CONFIG, encryption=ENCRYPTION,
                   hook=HOOK),
        ),
        ManagedFile(
            f"/etc/systemd/system/{CLIENT_UNIT}.timer",
            render("backup_client/hypha-backup.timer.j2", schedule=b.schedule),
            unit=f"{CLIENT_UNIT}.timer",
            action="restart",
        ),
    ]
    plan.packages += CLIENT_PACKAGES
    plan.units += [f"{CLIENT_UNIT}.timer"]
    plan.prepare.append(quote.sh_join(["install", "-d", "-m", "0700", "/etc/borgmatic/ssh", CANARY_DIR]))
    plan.finish.append(client_finish_step(stack, host))


def client_finish_step(stack: Stack, host: str) -> quote.Shell:
    """Debian's own borgmatic.timer off (it would prune from the client); the repository made once the target answers."""
    return render_shell("backup_client/finish.sh.j2", config=BORGMATIC_CONFIG, encryption=ENCRYPTION,
                  target=backup_model.target_name(stack), unit=CLIENT_UNIT)


# --- target ------------------------------------------------------------------------------------------


def authorized_keys(stack: Stack) -> str:
    """One line per client: only from its LAN address, only `borg serve` append-only on its own repository."""
    lines = ["# Managed by hypha-infra; edits are overwritten. One line per backup client.\n"]
    for c in backup_model.clients(stack):
        # The command runs through the borg user's shell: the path is a shell word inside the option.
        command = quote.sh_join(["borg", "serve", "--append-only", "--restrict-to-repository", backup_model.repository(stack, c),
                                 "--storage-quota", backup_model.quota(stack.backup, c)])
        options = [quote.authorized_keys_option("from", stack.hosts[c].lan_ip),
                   quote.authorized_keys_option("command", command), "restrict"]
        lines.append(quote.authorized_keys_line(late(f"borg/ssh-pubkey/{c}"), options) + "\n")
    return "".join(lines)


def target_config(stack: Stack, host: str) -> dict:
    b = stack.backup
    repos = {}
    for c in backup_model.clients(stack):
        repos[c] = {
            "path": backup_model.repository(stack, c),
            "passphrase_file": f"{PASSPHRASE_DIR}/{c}",
            "quota_bytes": backup_model.size_bytes(backup_model.quota(b, c)),
            # What the drill expects inside the latest archive (archive paths have no leading /).
            "expect": sorted({p.lstrip("/") for p in backup_model.client_paths(stack, c)} | set(dump_paths(stack, c))),
        }
    offsite = None
    if b.offsite is not None:
        o = b.offsite
        offsite = {"host": o.host, "port": o.port, "user": o.user, "path": o.path.rstrip("/"), "key": OFFSITE_KEY,
                   "known_hosts": OFFSITE_KNOWN_HOSTS, "keep_days": o.keep_days}
    return {
        "host": host,
        "user": BORG_USER,
        "borg_home": BORG_HOME,
        "repository_dir": b.repository_dir,
        "repositories": repos,
        "retention": {"daily": b.retention.daily, "weekly": b.retention.weekly, "monthly": b.retention.monthly},
        "canary": CANARY.lstrip("/"),
        "canary_max_age_seconds": b.canary_max_age_hours * 3600,
        "scratch": DRILL_DIR,
        "status": DRILL_STATUS,
        "archive_state": ARCHIVE_STATE_DIR,
        "archive_time_slack_seconds": ARCHIVE_TIME_SLACK_SECONDS,
        "textfile_dir": metrics.TEXTFILE_DIR,
        "metrics": {
            "drill_last_success": metrics.DRILL_LAST_SUCCESS,
            "drill_ok": metrics.DRILL_OK,
            "repository_size": metrics.REPOSITORY_SIZE,
            "repository_free": metrics.REPOSITORY_FREE,
            "repository_quota": metrics.REPOSITORY_QUOTA,
            "tampered": metrics.REPOSITORY_TAMPERED,
            "verified": metrics.REPOSITORY_VERIFIED,
            "job_ok": metrics.TARGET_JOB_OK,
        },
        "offsite": offsite,
    }


def backup_target(stack: Stack, host: str, plan: HostPlan) -> None:
    """The borg target: the `borg` account, one repository per client, prune, offsite copy, drill, metrics."""
    if stack.backup is None or host != backup_model.target_name(stack):
        return
    b = stack.backup
    clients = backup_model.clients(stack)
    plan.files += [
        ManagedFile(AUTHORIZED_KEYS, authorized_keys(stack), check="authorized_keys"),
        ManagedFile(TARGET_CONFIG, json.dumps(target_config(stack, host), indent=2, sort_keys=True) + "\n", check="json"),
        # Plain Python, not a template: it is the same on every target (its config is the JSON above).
        ManagedFile(TARGET_TOOL, (TEMPLATES / "backup_target/borg-target.py").read_text(), mode="0755", check="python"),
    ]
    # A removed host's repository stays readable while a retired service keeps its data declared
    # (model.derive_backup.kept): without its passphrase file here, the converge would delete the one copy.
    for c in [*clients, *backup_model.kept(stack)]:
        plan.files.append(ManagedFile(f"{PASSPHRASE_DIR}/{c}", late(f"borg/passphrase/{c}") + "\n", mode="0600"))
    if b.offsite is not None:
        o = b.offsite
        plan.files += [
            ManagedFile(OFFSITE_KEY, late("borg/offsite/ssh-key"), mode="0600", owner=BORG_USER, group=BORG_USER,
                        check="ssh_private_key"),
            ManagedFile(OFFSITE_KNOWN_HOSTS, quote.known_hosts_line(o.host, o.port, o.host_key) + "\n"),
        ]
    schedules = {"prune": b.prune_schedule, "offsite": b.offsite.schedule if b.offsite else None,
                 "drill": b.drill_schedule, "metrics": None, "watch": None}
    intervals = {"metrics": METRICS_INTERVAL, "watch": WATCH_INTERVAL}
    for job, what in TARGET_JOBS.items():
        if job == "offsite" and b.offsite is None:
            continue
        unit = target_unit(job)
        plan.files += [
            ManagedFile(f"/etc/systemd/system/{unit}.service",
                        render("backup_target/job.service.j2", job=job, what=what, tool=TARGET_TOOL, config=TARGET_CONFIG)),
            ManagedFile(f"/etc/systemd/system/{unit}.timer",
                        render("backup_target/job.timer.j2", what=what, schedule=schedules[job], interval=intervals.get(job)),
                        unit=f"{unit}.timer", action="restart"),
        ]
        plan.units.append(f"{unit}.timer")
    plan.packages += TARGET_PACKAGES
    repos = [backup_model.repository(stack, c) for c in clients]
    plan.prepare.append(render_shell(
        "backup_target/prepare.sh.j2", user=BORG_USER, repository_dir=b.repository_dir, repos=repos,
        home=BORG_HOME, state=STATE_DIR, scratch=DRILL_DIR, offsite_dir="/etc/hypha-backup/offsite",
        passphrase_dir=PASSPHRASE_DIR, archive_state=ARCHIVE_STATE_DIR,
    ))


# Two roles in one module, as they share the repository layout: the target one picks, and the client
# every host that holds data is (not a role one picks; render/roles/__init__.py applies it last).
NAME = "backup_target"

# The borg secrets, made by components/late.py under the Backups component (components/backup.py):
# a client's repokey passphrase (client and target), its borg login key (private half on the client,
# public half in the target's authorized_keys), and the target's key on the offsite server (its
# public half is the output `backup_offsite_public_key`).
_OWNER = r"(?P<owner>[a-z0-9][a-z0-9-]*)"
LATE_PASSPHRASE = LateValue(rf"borg/passphrase/{_OWNER}", "random-password", resource="borg-passphrase-{owner}", parent="backups")
LATE_CLIENT_KEY = LateValue(rf"borg/ssh-key/{_OWNER}", "ssh-keypair-private", resource="borg-ssh-{owner}", parent="backups")
LATE_CLIENT_PUBKEY = LateValue(rf"borg/ssh-pubkey/{_OWNER}", "ssh-keypair-public", resource="borg-ssh-{owner}", parent="backups")
LATE_OFFSITE_KEY = LateValue("borg/offsite/ssh-key", "ssh-keypair-private", resource="borg-ssh-offsite", parent="backups")
OFFSITE_PUBKEY = "borg/offsite/ssh-pubkey"
LATE_OFFSITE_PUBKEY = LateValue(OFFSITE_PUBKEY, "ssh-keypair-public", resource="borg-ssh-offsite", parent="backups")

ROLE = Role(NAME, backup_target, packages=tuple(TARGET_PACKAGES),
            late=(LATE_PASSPHRASE, LATE_CLIENT_PUBKEY, LATE_OFFSITE_KEY, LATE_OFFSITE_PUBKEY))
CLIENT = Role("backup_client", backup_client, bare_units=("borgmatic.timer",), packages=tuple(CLIENT_PACKAGES),
              late=(LATE_PASSPHRASE, LATE_CLIENT_KEY))
