"""The readiness probe the gateway runs before a LAN host's first converge, and why it is enough.

pulumi-command 1.2.1 reaches a LAN host through the gateway like this (provider/pkg/provider/remote/
connection.go, tag v1.2.1): it opens ONE direct-tcpip channel from the bastion (:222-224, retried only
until a channel opens) and then retries only the SSH handshake on that same channel (:232-237). A
failed handshake closes the channel (golang.org/x/crypto, NewClientConn closes `c` on
error: ssh/client.go:83-85 at v0.48.0, the version provider/go.mod:14 pins), so every further try
fails at once: a host that answers before it accepts the deploy key is
never reached. This probe re-dials instead, so by the time the provider dials, its first handshake is
the one that succeeds.

What "accepts the deploy key" proves on Debian 12 (cloud-init 22.4.2-1+deb12u4, openssh 1:9.2p1):

- cloud-init.service (the `init` stage: write_files, users_groups, ssh host keys) is ordered
  `Before=sshd.service` (/lib/systemd/system/cloud-init.service), ssh.service's alias; so sshd first
  starts with the accounts, the hardened drop-in and its host keys in place.
- cloud-config.service's set_passwords then *restarts* sshd (cc_set_passwords.handle_ssh_pwauth: our
  `ssh_pwauth: false` is written to a new sshd_config.d/50-cloud-init.conf, so `updated` is true and
  ssh is restarted) -- the restart the issue names.
- The deploy user's key file is written last, by write_files with `defer: true`, which
  cloud-final.service's write-files-deferred module runs (render/cloud_init.py). cloud-final is
  `After=cloud-config.service`, so once sshd accepts the deploy key, the set_passwords restart is over.

So the probe's success means: sshd is up, the deploy key is accepted from the gateway (its from=
option is checked on the probe too), and no cloud-init restart of sshd is still to come.
"""

from __future__ import annotations

from spec import derive
from spec.model import Stack

from .templates import render

READY_TIMEOUT = 900
"""Seconds the probe keeps asking; a cloud-final that installs packages from a slow mirror takes minutes."""
READY_INTERVAL = 2
PROBE_CONNECT_TIMEOUT = 5


def readiness_script(stack: Stack, host: str, timeout: int = READY_TIMEOUT, interval: int = READY_INTERVAL) -> str:
    """POSIX sh for the gateway: exits 0 once `host`'s sshd would accept the deploy key, 1 after `timeout` s.

    Pure: same stack in, same bytes out (it is a command input, so it must not change between runs).
    """
    if host == derive.gateway_name(stack):
        raise ValueError(f"{host} is the gateway: its own converge dials it directly and re-dials on every try")
    return render(
        "base/ready.sh.j2",
        host=host,
        user=derive.DEPLOY_USER,
        address=str(stack.hosts[host].lan_ip),
        public_key=stack.access.deploy.public_key,
        timeout=int(timeout),
        interval=int(interval),
        connect_timeout=PROBE_CONNECT_TIMEOUT,
    )
