"""Proxmox image backups per stack (`pulumi_proxmoxve.backup.Job`) and the backup secrets Pulumi generates.

The secrets (`borg/...` late values) are made here, once each, and reach hosts only on a converge
script's stdin as Pulumi secrets:
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
import pulumi_random as random
import pulumi_tls as tls

from model import derive_backup as backup_model
from model.stack import Stack

PASSPHRASE_LENGTH = 48


class Backups(pulumi.ComponentResource):
    """The stack's image backup job and the generated borg secrets, under one parent."""

    def __init__(self, stack: Stack, vms: dict, opts: pulumi.ResourceOptions):
        super().__init__("hypha:infra:Backups", "backups", None, opts)
        self.stack = stack
        self._keys: dict[str, tls.PrivateKey] = {}
        self._passphrases: dict[str, random.RandomPassword] = {}
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

    def key(self, owner: str) -> tls.PrivateKey:
        if owner not in self._keys:
            self._keys[owner] = tls.PrivateKey(
                f"borg-ssh-{owner}", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self)
            )
        return self._keys[owner]

    def passphrase(self, client: str) -> random.RandomPassword:
        if client not in self._passphrases:
            # Letters and digits only: no character a shell, YAML or borg could read differently.
            self._passphrases[client] = random.RandomPassword(
                f"borg-passphrase-{client}", length=PASSPHRASE_LENGTH, special=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
        return self._passphrases[client]


    def late_value(self, name: str) -> pulumi.Output[str]:
        """The value behind a `borg/...` placeholder, always a Pulumi secret (public keys excepted)."""
        parts = name.split("/")
        clients = backup_model.clients(self.stack)
        if len(parts) == 3 and parts[1] == "passphrase" and parts[2] in clients:
            return pulumi.Output.secret(self.passphrase(parts[2]).result)
        if len(parts) == 3 and parts[1] == "ssh-key" and parts[2] in clients:
            return pulumi.Output.secret(self.key(parts[2]).private_key_openssh)
        if len(parts) == 3 and parts[1] == "ssh-pubkey" and parts[2] in clients:
            return self.key(parts[2]).public_key_openssh.apply(lambda s: s.strip())
        if name == "borg/offsite/ssh-key":
            return pulumi.Output.secret(self.key("offsite").private_key_openssh)
        raise KeyError(f"late value {name!r} is not made by components/backup.py")

    def offsite_public_key(self) -> Optional[pulumi.Output[str]]:
        """The public half of the target's offsite key (for the offsite server's authorized_keys), if any."""
        if self.stack.backup is None or self.stack.backup.offsite is None or not backup_model.clients(self.stack):
            return None
        return self.key("offsite").public_key_openssh.apply(lambda s: s.strip())
