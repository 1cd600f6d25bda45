"""How much of each Proxmox node the hosts ask for: vCPUs, RAM and disk per storage pool."""

from __future__ import annotations

from dataclasses import dataclass, field

from .stack import Host, Proxmox

WARN_AT = 0.85


@dataclass
class Usage:
    used: int
    offered: int

    @property
    def ratio(self) -> float:
        return self.used / self.offered if self.offered else float("inf")

    @property
    def level(self) -> str:
        return "over" if self.used > self.offered else "warn" if self.ratio > WARN_AT else "ok"


@dataclass
class NodeUsage:
    vcpus: Usage
    memory_mb: Usage
    storage: dict[str, Usage] = field(default_factory=dict)

    def items(self) -> list[tuple[str, Usage]]:
        return [("vcpus", self.vcpus), ("memory_mb", self.memory_mb)] + [
            (f"storage.{name}", u) for name, u in sorted(self.storage.items())
        ]


def usage(proxmox: Proxmox, hosts: dict[str, Host]) -> dict[str, NodeUsage]:
    """Per node, what is asked for against what it offers. Hosts on unknown nodes are skipped."""
    out = {
        name: NodeUsage(
            vcpus=Usage(0, int(node.cores * node.vcpu_ratio)),
            memory_mb=Usage(0, node.memory_mb - node.reserved_memory_mb),
            storage={ds: Usage(0, size) for ds, size in node.storage.items()},
        )
        for name, node in proxmox.nodes.items()
    }
    for h in hosts.values():
        u = out.get(h.node)
        if u is None:
            continue
        u.vcpus.used += h.cores
        u.memory_mb.used += h.memory_mb
        ds = h.datastore or proxmox.default_datastore
        if ds in u.storage:
            u.storage[ds].used += h.disk_gb
    return out
