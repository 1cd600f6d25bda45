"""The readiness probe the gateway runs before a LAN host's first converge, and why it is enough.

pulumi-command 1.2.1 reaches a LAN host through the gateway like this (provider/pkg/provider/remote/
connection.go, tag v1.2.1): it opens ONE direct-tcpip channel from the bastion (:222-224, retried only
until a channel opens) and then retries only the SSH handshake on that same channel (:232-237). A
failed handshake closes the channel (golang.org/x/crypto, NewClientConn closes `c` on
error: ssh/client.go:83-85 at v0.48.0, the version provider/go.mod:14 pins), so every further try
fails at once: a host that answers before it accepts the deploy key is
never reached. This probe re-dials instead, so by the time the provider dials, its first handshake is
the one that succeeds.

What "accepts the deploy key" proves on Debian 12 (cloud-init 22.4.2-1+deb12u4, openssh 1:9.2p1-2,
read from the installed packages):

- cloud-init.service (the `init` stage; /etc/cloud/cloud.cfg:35-50 runs write-files, users-groups and
  ssh there) is `Before=sshd.service` (/lib/systemd/system/cloud-init.service:13), and sshd.service is
  ssh.service (`Alias=sshd.service`, ssh.service:22; the enabled unit's symlink): so sshd first starts
  with the accounts, the hardened drop-in and the host keys in place. An image that starts sshd
  earlier (the lab's hosts do) is covered by the probe anyway.
- cloud-config.service then runs set-passwords (cloud.cfg:58), which *restarts* sshd on first boot:
  `ssh_pwauth: false` goes into a new sshd_config.d/50-cloud-init.conf (ssh_util.py:557-577, Debian's
  sshd_config includes that directory), so `updated` is true and ssh is restarted
  (cc_set_passwords.py:182-188) -- the restart the issue names. With ssh.service's KillMode=process
  sessions already logged in survive it; a handshake queued on the listener does not.
- The deploy user's key file is written last: write_files with `defer: true` (render/cloud_init.py)
  is done by write-files-deferred in cloud-final.service (cloud.cfg:74), which is
  `After=cloud-config.service` (cloud-final.service:3). So once sshd accepts the deploy key, the
  set_passwords restart is over, and the provider's one handshake meets a settled sshd.

So the probe's success means: sshd is up, the deploy key is accepted from the gateway's deploy address
(its from= option is checked on the probe too: the probe runs as the deploy user, so the gateway's
nftables gives it that address like the converge's own channel), and no cloud-init restart of sshd is
still to come.
"""

from __future__ import annotations

from model import derive
from model.stack import Stack

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
