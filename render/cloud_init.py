"""Cloud-init user-data for one VM: its accounts and the access files from render/roles/base.py, the guest agent."""

from __future__ import annotations

from typing import Mapping

from model import derive
from model.stack import Stack

from .roles.base import AUTHORIZED_KEYS_DIR, PEOPLE_GROUP, accounts, access_files
from .hostkeys import cloud_init_keys
from .templates import render


def user_data(stack: Stack, host: str, host_keys: Mapping[str, str]) -> str:
    """The #cloud-config document for `host`. Pure: same stack and keys in, same bytes out.

    `host_keys` are the host's SSH host keys by `<type>-private` / `<type>-public`
    (render/hostkeys.py): the document then holds private keys, so the program keeps it a secret.

    It creates the accounts without keys and writes the same root-owned key files, sudoers and
    sshd drop-in the converge script manages, so first boot and later converges never disagree.
    """
    users = [{"name": a.name, "gecos": a.gecos, "groups": [PEOPLE_GROUP]} for a in accounts(stack)]
    users.append({"name": derive.DEPLOY_USER, "gecos": "deploy (hypha-infra converge)", "groups": []})
    # The deploy key last: written by cloud-final (write-files-deferred), after cloud-config's
    # set_passwords has restarted sshd, so "sshd accepts the deploy key" means first boot will not
    # restart sshd again (render/readiness.py has the unit ordering this relies on).
    deploy_keys = f"{AUTHORIZED_KEYS_DIR}/{derive.DEPLOY_USER}"
    files = [
        {"path": f.path, "owner": f"{f.owner}:{f.group}", "permissions": f.mode, "content": f.content,
         "defer": f.path == deploy_keys}
        for f in access_files(stack, host)
    ]
    return render(
        "base/user-data.yaml.j2",
        host=host,
        fqdn=f"{host}.{stack.network.search_domain or stack.site.domain}",
        group=PEOPLE_GROUP,
        users=users,
        files=files,
        ssh_keys=cloud_init_keys(host_keys),
    )
