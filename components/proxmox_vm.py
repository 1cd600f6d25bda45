"""One VM of the catalog on Proxmox VE: its cloud-init snippet, the cloned VM, and its firewall."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_proxmoxve as pve

from render.cloud_init import user_data
from model import derive
from model.stack import Stack

# Debian 12 guests; the Proxmox default CPU model (kvm64) lacks AES-NI and x86-64-v2.
CPU_TYPE = "x86-64-v2-AES"


@dataclass
class ProxmoxVmArgs:
    stack: Stack
    host: str
    pool_id: pulumi.Input[str]
    host_keys: pulumi.Input[Mapping[str, str]]
    """The host's SSH host keys for cloud-init (components/host_keys.py `HostKeys.material`), a secret."""


def snippet_file_name(stack: Stack, host: str) -> str:
    return f"hypha-{stack.site.stack}-{host}.user-data.yaml"


def _ip_configs(stack: Stack, host: str) -> list[pve.VmLegacyInitializationIpConfigArgs]:
    """One entry per network device, in device order: LAN first, then the public bridge."""
    h = stack.hosts[host]
    prefix = stack.network.lan_cidr.prefixlen
    public = stack.network.public
    has_public = bool(h.public_ipv4 or h.public_ipv6)
    lan = pve.VmLegacyInitializationIpConfigArgs(
        ipv4=pve.VmLegacyInitializationIpConfigIpv4Args(
            address=f"{h.lan_ip}/{prefix}",
            # A host with a public address routes to the internet there, not through the NAT.
            gateway=None if has_public else str(stack.network.gateway),
        )
    )
    configs = [lan]
    if has_public and public is not None:
        configs.append(
            pve.VmLegacyInitializationIpConfigArgs(
                ipv4=pve.VmLegacyInitializationIpConfigIpv4Args(
                    address=f"{h.public_ipv4}/{public.ipv4_cidr.prefixlen}", gateway=str(public.ipv4_gateway)
                )
                if h.public_ipv4 and public.ipv4_cidr
                else None,
                ipv6=pve.VmLegacyInitializationIpConfigIpv6Args(
                    address=f"{h.public_ipv6}/{public.ipv6_cidr.prefixlen}",
                    gateway=str(public.ipv6_gateway) if public.ipv6_gateway else None,
                )
                if h.public_ipv6 and public.ipv6_cidr
                else None,
            )
        )
    return configs


def _network_devices(stack: Stack, host: str) -> list[pve.VmLegacyNetworkDeviceArgs]:
    h = stack.hosts[host]
    devices = [pve.VmLegacyNetworkDeviceArgs(bridge=stack.network.lan_bridge, model="virtio", firewall=True)]
    if (h.public_ipv4 or h.public_ipv6) and stack.network.public is not None:
        devices.append(pve.VmLegacyNetworkDeviceArgs(bridge=stack.network.public.bridge, model="virtio", firewall=True))
    return devices


class ProxmoxVm(pulumi.ComponentResource):
    """A catalog host as a full clone of the Debian 12 template, locked down by its own firewall."""

    vm_id: pulumi.Output[int]
    """Proxmox VM id."""
    lan_ip: pulumi.Output[str]
    """Address on the stack LAN."""
    public_ipv4: pulumi.Output[Optional[str]]
    """Public IPv4 address, if any."""
    snippet_id: pulumi.Output[str]
    """Volume id of the cloud-init user-data snippet."""
    user_data: pulumi.Output[str]
    """The cloud-init document the VM boots with (a secret: it holds the host's private host keys)."""

    def __init__(self, name: str, args: ProxmoxVmArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hypha:infra:ProxmoxVm", name, None, opts)
        stack, host = args.stack, args.host
        h = stack.hosts[host]
        child = pulumi.ResourceOptions(parent=self)
        # The document carries the host's private SSH host keys: a secret in the state and in every
        # preview. Where else it lives: the node's snippet storage (README, Host keys).
        document = pulumi.Output.secret(
            pulumi.Output.from_input(args.host_keys).apply(lambda keys: user_data(stack, host, keys))
        )

        snippet = pve.FileLegacy(
            f"{name}-user-data",
            node_name=h.node,
            datastore_id=stack.proxmox.snippet_datastore,
            content_type="snippets",
            source_raw=pve.FileLegacySourceRawArgs(data=document, file_name=snippet_file_name(stack, host)),
            opts=child,
        )

        datastore = h.datastore or stack.proxmox.default_datastore
        vm = pve.VmLegacy(
            f"{name}-vm",
            name=host,
            node_name=h.node,
            vm_id=h.vm_id,
            description=f"{host} ({', '.join(h.roles) or 'base'}); managed by hypha-infra, stack {stack.site.stack}",
            tags=derive.vm_tags(stack, host),
            pool_id=args.pool_id,
            on_boot=stack.site.on_boot,
            started=True,
            protection=derive.protected(stack, host),
            clone=pve.VmLegacyCloneArgs(
                vm_id=stack.proxmox.template.vm_id, node_name=stack.proxmox.template.node, full=True, datastore_id=datastore
            ),
            cpu=pve.VmLegacyCpuArgs(cores=h.cores, sockets=1, type=CPU_TYPE),
            memory=pve.VmLegacyMemoryArgs(dedicated=h.memory_mb),
            disks=[
                pve.VmLegacyDiskArgs(
                    interface="scsi0", datastore_id=datastore, size=h.disk_gb, discard="on", iothread=True, ssd=True
                )
            ],
            scsi_hardware="virtio-scsi-single",
            network_devices=_network_devices(stack, host),
            agent=pve.VmLegacyAgentArgs(enabled=True, trim=True),
            operating_system=pve.VmLegacyOperatingSystemArgs(type="l26"),
            initialization=pve.VmLegacyInitializationArgs(
                datastore_id=datastore,
                ip_configs=_ip_configs(stack, host),
                dns=pve.VmLegacyInitializationDnsArgs(
                    servers=[str(r) for r in stack.network.resolvers],
                    domain=stack.network.search_domain or stack.site.domain,
                ),
                user_data_file_id=snippet.id,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=derive.protected(stack, host),
                ignore_changes=[
                    # Changing the user-data snippet forces the VM to be replaced (its file id is
                    # ForceNew): bpg/terraform-provider-proxmox#1636, #2901. Cloud-init only acts on
                    # first boot anyway; later changes reach the host through HostBootstrap.
                    "initialization.userDataFileId",
                ],
            ),
        )

        firewall_opts = pulumi.ResourceOptions(parent=self, depends_on=[vm])
        pve.firewall.OptionsLegacy(
            f"{name}-firewall-options",
            node_name=h.node,
            vm_id=h.vm_id,
            enabled=True,
            input_policy="DROP",
            output_policy="ACCEPT",
            macfilter=True,
            ipfilter=True,
            dhcp=False,
            radv=False,
            opts=firewall_opts,
        )
        if host == derive.gateway_name(stack):
            # ipfilter=True above is "an empty ipfilter-net<id> ipset for every interface"; the provider
            # documents configured addresses as added implicitly for containers only
            # (pulumi_proxmoxve/firewall/options_legacy.py:44-48), and a second address is no configured
            # one anyway. The gateway sends from a second LAN address (the deploy address, model/derive.py
            # deploy_address), so its LAN NIC's set names both, explicitly
            # (pulumi_proxmoxve/firewall/ipset_legacy.py:232, a VM-level IPSet named ipfilter-net0).
            pve.firewall.IpsetLegacy(
                f"{name}-ipfilter-net0",
                node_name=h.node,
                vm_id=h.vm_id,
                name="ipfilter-net0",
                comment="hypha-infra: the LAN addresses the gateway may send from",
                cidrs=[
                    pve.firewall.IpsetLegacyCidrArgs(name=str(h.lan_ip), comment="LAN address"),
                    pve.firewall.IpsetLegacyCidrArgs(
                        name=derive.deploy_address(stack), comment="deploy address: the deploy user's jumped sessions"
                    ),
                ],
                opts=firewall_opts,
            )
        pve.firewall.RulesLegacy(
            f"{name}-firewall-rules",
            node_name=h.node,
            vm_id=h.vm_id,
            rules=[
                pve.firewall.RulesLegacyRuleArgs(
                    type="in",
                    action="ACCEPT",
                    proto=rule.proto,
                    dport=str(rule.port),
                    source=rule.source,
                    comment=rule.comment,
                    enabled=True,
                )
                for rule in derive.inbound_rules(stack, host)
            ],
            opts=firewall_opts,
        )

        self.vm_id = vm.vm_id
        self.lan_ip = pulumi.Output.from_input(str(h.lan_ip))
        self.public_ipv4 = pulumi.Output.from_input(str(h.public_ipv4) if h.public_ipv4 else None)
        self.snippet_id = snippet.id
        self.user_data = document
        self.register_outputs(
            {
                "vm_id": self.vm_id,
                "lan_ip": self.lan_ip,
                "public_ipv4": self.public_ipv4,
                "snippet_id": self.snippet_id,
                "user_data": self.user_data,
            }
        )
