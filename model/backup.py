"""The `backup` section: borg target, retention, offsite copy, restore drill and Proxmox image backups.

What follows from it (target, clients, repositories, quotas) is model/derive_backup.py; its checks
against the rest of the stack are model/check_backup.py.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, field_validator

from .base import _Model
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

# borg's own size syntax (helpers.parse_file_size: decimal K/M/G/T), limited to what a quota needs
# (model/derive_backup.py size_bytes reads it).
Size = pattern_type("size", r"[1-9][0-9]{0,5}[MGT]", "is not a size such as 500M, 100G or 2T (decimal units, as borg reads them)", max_length=32)


class Database(_Model):
    engine: Identifier = Field(description="Database engine; dumped by borgmatic's hook for it (`postgresql`, `mysql`).")
    name: DatabaseName = Field(description="Database name (`all` for every database of the server).")


class Retention(_Model):
    daily: whole(ge=0, le=100_000) = Field(default=7, description="Daily archives kept (the last of each day).")
    weekly: whole(ge=0, le=100_000) = Field(default=4, description="Weekly archives kept beyond the daily ones.")
    monthly: whole(ge=0, le=100_000) = Field(default=3, description="Monthly archives kept beyond the weekly ones.")


class Offsite(_Model):
    host: HostOrAddress = Field(description="Address or DNS name of the offsite SSH server (outside the stack).")
    port: Port = Field(default=22, description="Its SSH port.")
    user: RemoteUser = Field(description="Login on the offsite server; its authorized_keys holds the output `backup_offsite_public_key`.")
    path: AbsolutePath = Field(description="Absolute directory on the offsite server; each repository is copied to `<path>/<client>`.")
    host_key: SshPublicKey = Field(
        description="The offsite server's SSH host public key (`ssh-ed25519 AAAA...`), pinned: the copy refuses any other."
    )
    schedule: CalendarEvent = Field(default="*-*-* 05:30", description="When the copy runs (systemd calendar event, on the target).")
    keep_days: whole(ge=1, le=3650) = Field(
        default=30,
        description="Each copy is a new dated snapshot (`<path>/<client>/<UTC time>`, unchanged files hardlinked to the "
        "previous one); snapshots older than this many days are removed. The history a client cannot reach.",
    )

    _host_key = field_validator("host_key")(check_public_key)


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
