"""Proxmox image backups per stack (`pulumi_proxmoxve.backup.Job`); the backup secrets Pulumi generates sit under it.

The secrets (`borg/...` late values, declared by render/roles/backup.py) are made by
components/late.py under this component, once each, and reach hosts only on a converge script's
stdin as Pulumi secrets:
  borg/passphrase/<client>   RandomPassword: the client's repokey-blake2 passphrase (client + target)
  borg/ssh-key/<client>      tls.PrivateKey (ED25519), OpenSSH private half: the client's borg login
  borg/ssh-pubkey/<client>   its public half, in the target's authorized_keys
  borg/offsite/ssh-key       the target's key on the offsite server (public half: output
                             `backup_offsite_public_key`, for the offsite server's authorized_keys)
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_proxmoxve as pve

from model import derive_backup as backup_model
from model.stack import Stack
from render.roles import backup as render_backup

from .late import LateValues


class Backups(pulumi.ComponentResource):
    """The stack's image backup job and the generated borg secrets, under one parent."""

    def __init__(self, stack: Stack, vms: dict, opts: pulumi.ResourceOptions):
        super().__init__("hypha:infra:Backups", "backups", None, opts)
        self.stack = stack
        self.job: Optional[pve.backup.Job] = None
        b = stack.backup
        if b is not None and b.images is not None and vms:
            im = b.images
            keep = {f"keep-{k}": str(v) for k, v in
                    (("last", im.keep_last), ("daily", im.keep_daily), ("weekly", im.keep_weekly), ("monthly", im.keep_monthly))
                    if v}
            ids = sorted(stack.hosts[name].vm_id for name in vms)
            self.job = pve.backup.Job(
                "images",
                resource_id=f"hypha-{stack.site.stack}-images",
                schedule=im.schedule,
                storage=im.storage,
                vmids=[str(i) for i in ids],
                mode=im.mode,
                compress=im.compress,
                prune_backups=keep,
                enabled=im.enabled,
                notes_template=f"hypha-infra stack {stack.site.stack}: {{{{guestname}}}}",
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(vms.values())),
            )
        self.register_outputs({"job": self.job.id if self.job else None})

    def offsite_public_key(self, late: LateValues) -> Optional[pulumi.Output[str]]:
        """The public half of the target's offsite key (for the offsite server's authorized_keys), if any."""
        if self.stack.backup is None or self.stack.backup.offsite is None or not backup_model.clients(self.stack):
            return None
        return late.value(render_backup.OFFSITE_PUBKEY)
