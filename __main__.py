"""Composes the components for the current stack. Every difference between stacks comes from config."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pulumi  # noqa: E402
import pulumi_proxmoxve as pve  # noqa: E402

from components.config import deploy_private_key, proxmox_api_token, stack_from_config  # noqa: E402
from components.gateway import Gateway, GatewayArgs  # noqa: E402
from components.backup import Backups  # noqa: E402
from components.cluster_firewall import ClusterFirewall  # noqa: E402
from components.late import LateValues  # noqa: E402
from components.host_bootstrap import HostBootstrap, HostBootstrapArgs  # noqa: E402
from components.host_keys import HostKeys  # noqa: E402
from components.proxmox_vm import ProxmoxVm, ProxmoxVmArgs  # noqa: E402
from render.converge import converge_script, late_names  # noqa: E402
from render.roles import every_role  # noqa: E402
from model import derive  # noqa: E402

# Validates everything first: a bad config raises here, before any resource is registered.
stack = stack_from_config()
# Every host's files too (shortlinks.csv among them): a bad one must also stop us before any resource.
scripts = {name: converge_script(stack, name) for name in sorted(stack.hosts)}

provider = pve.Provider(
    "proxmox",
    endpoint=stack.proxmox.endpoint,
    insecure=stack.proxmox.insecure,
    api_token=proxmox_api_token(),
    # Snippets are uploaded over SSH to the node; the operator's ssh-agent holds the key. There is
    # no host key option (pulumi-proxmoxve 8.6.0's ProviderSshArgs; bpg v0.111.1 fwprovider/
    # provider.go:97-115): the provider checks the node against ~/.ssh/known_hosts of whoever runs
    # the engine, refuses a changed key and adds an unknown one (bpg/terraform-provider-proxmox
    # v0.111.1 proxmox/ssh/client.go:663-689), so the README has that file seeded beforehand.
    ssh=pve.ProviderSshArgs(agent=True, username=stack.proxmox.ssh_user),
)
with_provider = pulumi.ResourceOptions(providers=[provider])

pool = pve.PoolLegacy(
    "pool",
    pool_id=stack.proxmox.pool,
    comment=f"hypha-infra stack {stack.site.stack}",
    opts=pulumi.ResourceOptions(provider=provider),
)

# Without the datacenter firewall on, Proxmox ignores every VM's firewall below.
cluster_firewall = ClusterFirewall("cluster-firewall", stack, with_provider)

# Every host's SSH identity, made before its VM: cloud-init delivers it, every connection pins it.
host_keys = HostKeys(stack)
gw_name = derive.gateway_name(stack)
gateway = Gateway("gateway", GatewayArgs(stack, pool.pool_id, host_keys.material(gw_name)), with_provider)
vms = {gw_name: gateway.vm}
for name in sorted(stack.hosts):
    if name not in vms:
        vms[name] = ProxmoxVm(name, ProxmoxVmArgs(stack, name, pool.pool_id, host_keys.material(name)), with_provider)

# Whole-VM images on the Proxmox side, besides borg inside the VMs; the borg secrets sit under it.
backups = Backups(stack, vms, with_provider)

# Secrets and keys the scripts ask for by name, each made once, as the roles declare them (components/late.py).
late_values = LateValues(stack, [d for role in every_role() for d in role.late], {"backups": backups, "host-keys": host_keys})
late = late_values.values(n for s in scripts.values() for n in late_names(s))
# The offsite server's operator puts this in its authorized_keys (README, Backups).
offsite_key = backups.offsite_public_key(late_values)
if offsite_key is not None:
    pulumi.export("backup_offsite_public_key", offsite_key)

# Every host converged over SSH through the gateway, once its VM exists: the gateway first, then
# each LAN host once the gateway has converged and the host's sshd accepts the deploy key.
deploy_key = deploy_private_key()


def bootstrap(name: str, after: list, gateway: HostBootstrap | None = None) -> HostBootstrap:
    pins = {h: host_keys.pin(h) for h in (name, gw_name)}
    return HostBootstrap(name, HostBootstrapArgs(stack, name, vms[name], deploy_key, scripts[name], late, pins,
                                                 rotate_from=host_keys.previous_pin(name), after_host_keys=after,
                                                 gateway=gateway))


bootstraps = {gw_name: bootstrap(gw_name, [])}
# A LAN host's proxy leg pins the gateway's current key: it waits for the gateway's rotation, if any.
gw_rotation = [r for r in [bootstraps[gw_name].host_key_rotation] if r is not None]
bootstraps.update(
    {name: bootstrap(name, gw_rotation, bootstraps[gw_name]) for name in sorted(stack.hosts) if name != gw_name}
)
bootstraps = dict(sorted(bootstraps.items()))

pulumi.export(
    "hosts",
    {
        name: {
            "vm_id": h.vm_id,
            "node": h.node,
            "lan_ip": str(h.lan_ip),
            "public_ipv4": str(h.public_ipv4) if h.public_ipv4 else None,
            "public_ipv6": str(h.public_ipv6) if h.public_ipv6 else None,
            "roles": list(h.roles),
            "ssh": derive.ssh_jump_command(stack, name),
            "converge_sha256": bootstraps[name].script_sha256,
        }
        for name, h in sorted(stack.hosts.items())
    },
)
pulumi.export("public_urls", [e["url"] for e in derive.public_endpoints(stack)])
pulumi.export("ssh_jump", gateway.jump_command)
# Members append it to ~/.ssh/known_hosts before their first jump (README, Host keys).
pulumi.export("known_hosts", host_keys.known_hosts)
