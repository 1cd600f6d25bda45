"""Throw-away lab hosts: systemd-nspawn over an overlay of `/`, each in its own network namespace, on a private front network and LAN.

Brought up by the tests, the benches and `python -m lab` (lab/__main__.py). Layout, everything
named by the lab's prefix (lab/subnets.py gives each lab its prefix and ranges) so several labs can
exist at once:

    root namespace (pytest, "the deployment server / the internet")
       <prefix>-up: first address of the front subnet; no route to the LAN (an `unreachable` route)
         │
    <prefix>-sw namespace: bridges `front` and `lan`
         │ front                          │ lan
       gateway host: front0 + lan0        other hosts: lan0, default route via the LAN gateway
       clients (add_client): front0

Hosts only ever talk to addresses inside these namespaces: the root end does not forward, and the
hosts get an empty resolv.conf so nothing inside tries the machine's resolver.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from render.roles import every_role

from .subnets import PREFIX_RE, subnets

BASE_DIR = Path("/tmp/hypha-lab")
# A Lab built without ranges gets the demo lab's (`python -m lab up`).
FRONT = str(subnets("demo").front)
LAN = str(subnets("demo").lan)
BOOT_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")

# Commands run in hosts get this environment, not pytest's (pyenv shims, proxies, CA overrides).
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
}
# nspawn mounts /proc/sys read-only; it makes /proc/sys/net writable for a private network only when it
# creates the namespace itself, not for --network-namespace-path. "network" asks for exactly that, so
# a gateway's converge can set net.ipv4.ip_forward like on a VM.
NSPAWN_ENV = {**HOST_ENV, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}

# Enabled on this machine but meaningless (or harmful: timers, cloud-init, hardware probes) in a lab
# host. Masked even when not currently enabled, in case a later package install enables them.
MASK_ALWAYS = (
    "cloud-init.service", "cloud-init-local.service", "cloud-config.service", "cloud-final.service",
    "cloud-init-hotplugd.socket", "postgresql.service", "smartmontools.service", "apparmor.service",
    "e2scrub_reap.service", "nvmefc-boot-connections.service", "nvmf-autoconnect.service",
    "systemd-pstore.service", "openipmi.service", "getty@.service", "console-getty.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "fstrim.timer", "man-db.timer",
)
# Units a role's converge enables: off in a bare host (like a fresh VM), but not masked. Each role
# declares its own (Role.bare_units); the lab needs none of its own today.
DISABLE: tuple[str, ...] = tuple(dict.fromkeys(u for role in every_role() for u in role.bare_units))
# The parts of a VM's first boot a lab host runs, in the VM's order: cloud-init.service (init),
# cloud-config.service's set_passwords, cloud-final.service's write_files_deferred.
FIRST_BOOT_STAGES = (
    ("init", "--local"),
    ("init",),
    ("single", "--name", "set_passwords", "--frequency", "always"),
    ("single", "--name", "write_files_deferred", "--frequency", "always"),
)
# Enabled units a lab host keeps (besides systemd-* and targets).
KEEP = ("ssh.service", "ssh.socket", "sshd.service")
# Present on this machine because it is a Docker image, absent on a real VM.
HIDE = ("etc/apt/apt.conf.d/docker-clean", "usr/sbin/policy-rc.d")

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,12}$")  # switch ports are `f-<name>`: 15 chars at most

Command = Union[str, Sequence[str]]


class LabError(RuntimeError):
    """The lab could not be brought up (the message carries the failing host's nspawn log tail)."""


class CommandFailed(subprocess.CalledProcessError):
    """A command in a lab host or namespace exited non-zero; the message carries its output."""

    def __str__(self) -> str:
        out = (self.stderr or "").strip() or (self.stdout or "").strip()
        return f"{super().__str__()}\n{out[-2000:]}" if out else super().__str__()


@dataclass(frozen=True)
class LabHost:
    name: str
    lan: str
    """LAN address (without prefix length)."""
    front: Optional[str] = None
    """Front ("public") address: only the gateway host has one."""


def layout(gateway: str = "gw", others: Sequence[str] = ("h1", "h2"), front: str = FRONT, lan: str = LAN) -> list[LabHost]:
    """The usual lab: gateway on front .2 and LAN .2, the others on LAN .3, .4, … (as lab.stack allocates)."""
    f = list(ipaddress.ip_network(front).hosts())
    n = list(ipaddress.ip_network(lan).hosts())
    return [LabHost(gateway, str(n[1]), str(f[1]))] + [LabHost(h, str(n[2 + i])) for i, h in enumerate(others)]


# ---------------------------------------------------------------------------------------------------
# small helpers


def _sh(args: Sequence[str], *, timeout: float = 30.0, check: bool = True, input: Optional[str] = None,
        env: Optional[dict] = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout} s: {' '.join(args)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _argv(cmd: Command) -> list[str]:
    return ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process a test or the lab started, by its PID: SIGTERM, then SIGKILL after `grace` s."""
    if proc.poll() is None:
        _kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait (bounded) until the processes are gone; reap them when they are our children. Returns survivors."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.remove(pid)
                    continue
            except ChildProcessError:
                pass
            if not _alive(pid):
                left.remove(pid)
        if left:
            time.sleep(0.05)
    return left


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw))
    return points


def _umount_under(top: Path) -> None:
    """Unmount everything at or below `top`, deepest first (lazily when busy)."""
    prefix = str(top).rstrip("/")
    for point in sorted({p for p in _mount_points() if p == prefix or p.startswith(prefix + "/")},
                        key=len, reverse=True):
        if _sh(["umount", point], check=False, timeout=15).returncode != 0:
            _sh(["umount", "-l", point], check=False, timeout=15)


def netns_list() -> list[str]:
    out = _sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = _sh(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def _nspawn_processes(lab_dir: Path, prefix: str) -> list[int]:
    """systemd-nspawn processes of this lab: their root is under the lab dir or their machine is `<prefix>-…`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if not argv or not os.path.basename(argv[0]).startswith("systemd-nspawn"):
            continue
        for i, arg in enumerate(argv):
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            if (arg == "-D" and nxt.startswith(str(lab_dir) + "/")) or (arg == "-M" and nxt.startswith(prefix + "-")):
                found.append(int(entry.name))
                break
    return found


def _init_pid(nspawn_pid: int, ns: Optional[str] = None) -> Optional[int]:
    """The container's PID 1 (systemd), a child of the nspawn process; else the first `systemd` in its netns."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in map(int, children):
        if _comm(pid) == "systemd":
            return pid
    if ns:
        for pid in netns_pids(ns):
            if _comm(pid) == "systemd" and _ppid(pid) == nspawn_pid:
                return pid
    return None


def sweep(prefix: str, base_dir: Path = BASE_DIR) -> list[str]:
    """Remove whatever a lab with this prefix left behind (nspawn processes, netns, links, routes, mounts).

    Safe to run when nothing is left. Returns what it removed, for the log.
    """
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"lab prefix {prefix!r} must match {PREFIX_RE.pattern}")
    lab_dir = Path(base_dir) / prefix
    done: list[str] = []
    # Containers first: killing PID 1 of a container ends its whole PID namespace, then nspawn exits.
    nspawns = _nspawn_processes(lab_dir, prefix)
    for pid in nspawns:
        init = _init_pid(pid)
        if init:
            _kill(init)
        done.append(f"container nspawn pid {pid}")
    if _wait_gone(nspawns, 5.0):
        for pid in nspawns:
            _kill(pid)
        _wait_gone(nspawns, 5.0)
    namespaces = [ns for ns in netns_list() if ns.startswith(prefix + "-")]
    for ns in namespaces:
        pids = netns_pids(ns)
        for pid in pids:
            _kill(pid)
        _wait_gone(pids, 5.0)
    state_file = lab_dir / "state.json"
    state = {}
    if state_file.exists():
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            pass
    if _sh(["ip", "link", "show", f"{prefix}-up"], check=False).returncode == 0:
        _sh(["ip", "link", "del", f"{prefix}-up"], check=False)
        done.append(f"link {prefix}-up")
    for net in state.get("unreachable", []):
        if _sh(["ip", "route", "del", "unreachable", net], check=False).returncode == 0:
            done.append(f"route unreachable {net}")
    for ns in namespaces:
        _sh(["ip", "netns", "del", ns], check=False)
        done.append(f"netns {ns}")
    if any(p == str(lab_dir) or p.startswith(str(lab_dir) + "/") for p in _mount_points()):
        _umount_under(lab_dir)
        done.append(f"mounts under {lab_dir}")
    if lab_dir.is_dir():
        shutil.rmtree(lab_dir, ignore_errors=True)
    _remove_propagate_dirs(prefix)
    return done


def _remove_propagate_dirs(prefix: str) -> None:
    # nspawn cannot remove these itself when /run is not a tmpfs ("we can't allow that").
    if NSPAWN_PROPAGATE.is_dir():
        mounts = set(_mount_points())
        for d in NSPAWN_PROPAGATE.glob(f"{prefix}-*"):
            if d.is_dir() and not any(m.startswith(str(d)) for m in mounts):
                shutil.rmtree(d, ignore_errors=True)


def _enabled_units(root: Path = Path("/")) -> set[str]:
    """Unit files enabled in `root` (what its boot pulls in through /etc/systemd/system/*.wants etc.).

    Read from the symlinks: `systemctl --root list-unit-files` takes ~2 s here.
    """
    units = set()
    for d in (root / "etc/systemd/system").glob("*.*"):
        if not d.is_dir() or d.suffix not in (".wants", ".requires", ".upholds"):
            continue
        for entry in d.iterdir():
            target = os.readlink(entry) if entry.is_symlink() else entry.name
            if target != "/dev/null":
                units.add(os.path.basename(target))
    return units


@functools.lru_cache(maxsize=1)
def _units_to_mask() -> tuple[str, ...]:
    """Units to mask in every host: MASK_ALWAYS plus whatever else this machine enables that a lab host needs not."""
    extra = sorted(u for u in _enabled_units() if not kept_on(u) and u not in DISABLE)
    return tuple(dict.fromkeys([*MASK_ALWAYS, *extra]))


def kept_on(unit: str) -> bool:
    """Whether a bare lab host keeps `unit` as this machine enables it (sshd, systemd's own, targets), as a fresh VM would."""
    return unit in KEEP or unit.startswith("systemd-") or unit.endswith(".target")


def _mask(root: Path, units: Sequence[str]) -> None:
    """What `systemctl --root mask` does (a /dev/null symlink in /etc/systemd/system), in 1 ms instead of 1.5 s."""
    d = root / "etc/systemd/system"
    for unit in units:
        link = d / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """Whether this machine can run the lab, and why not."""
    if os.geteuid() != 0:
        return False, "the lab needs root (network namespaces, mounts, systemd-nspawn)"
    for tool in ("ip", "systemd-nspawn", "nsenter", "systemctl", "ss", "mount", "umount"):
        if shutil.which(tool) is None:
            return False, f"{tool} is not installed (systemd-nspawn: package systemd-container)"
    probe = f"hyphaprobe{os.getpid()}"
    try:
        added = _sh(["ip", "netns", "add", probe], check=False)
        if added.returncode != 0:
            return False, f"ip netns add does not work here: {added.stderr.strip()}"
        up = _sh(["ip", "-n", probe, "link", "set", "lo", "up"], check=False)
        if up.returncode != 0:
            return False, f"cannot configure a network namespace: {up.stderr.strip()}"
    finally:
        _sh(["ip", "netns", "del", probe], check=False)
    with tempfile.TemporaryDirectory(prefix="hypha-lab-probe-") as tmp:
        t = Path(tmp)
        try:
            mounted = _sh(["mount", "-t", "tmpfs", "-o", "size=16m", "hypha-lab-probe", str(t)], check=False)
            if mounted.returncode != 0:
                return False, f"cannot mount a tmpfs: {mounted.stderr.strip()}"
            for d in ("upper", "work", "root"):
                (t / d).mkdir()
            ov = _sh(["mount", "-t", "overlay", "hypha-lab-probe", "-o",
                      f"lowerdir=/,upperdir={t}/upper,workdir={t}/work", str(t / "root")], check=False)
            if ov.returncode != 0:
                return False, f"overlayfs over / with its upper layer on a tmpfs does not work: {ov.stderr.strip()}"
            (t / "root" / "etc" / "hypha-lab-probe").write_text("x")
            if not (t / "root" / "etc" / "os-release").exists() or Path("/etc/hypha-lab-probe").exists():
                return False, "overlayfs over / does not behave (lower not visible or writes leak)"
        finally:
            _umount_under(t)
    return True, "root, ip netns, systemd-nspawn and overlayfs over / all work"


# ---------------------------------------------------------------------------------------------------
# the lab


@dataclass
class _Running:
    process: subprocess.Popen
    log: Path
    init: Optional[int] = None
    poweroff_sent: bool = False


class Lab:
    """A set of throw-away hosts on a front network and a LAN. Use as a context manager, or up()/down()."""

    def __init__(
        self,
        prefix: str,
        hosts: Sequence[LabHost],
        *,
        front: str = FRONT,
        lan: str = LAN,
        lan_gateway: Optional[str] = None,
        base_dir: Union[str, Path] = BASE_DIR,
        boot_timeout: float = BOOT_TIMEOUT,
        tmpfs_size: str = "2g",
        keep_on_failure: bool = False,
    ):
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"lab prefix {prefix!r} must match {PREFIX_RE.pattern} (interface names stay short)")
        self.prefix = prefix
        self.front = ipaddress.ip_network(front)
        self.lan = ipaddress.ip_network(lan)
        if self.front.overlaps(self.lan):
            raise ValueError(f"front {front} and LAN {lan} overlap")
        self.hosts: dict[str, LabHost] = {}
        for h in hosts:
            if not NAME_RE.match(h.name) or h.name in ("sw",) or h.name in self.hosts:
                raise ValueError(f"bad or duplicate host name {h.name!r} (must match {NAME_RE.pattern}, not 'sw')")
            if ipaddress.ip_address(h.lan) not in self.lan:
                raise ValueError(f"{h.name}: LAN address {h.lan} is not in {lan}")
            if h.front is not None and ipaddress.ip_address(h.front) not in self.front:
                raise ValueError(f"{h.name}: front address {h.front} is not in {front}")
            self.hosts[h.name] = h
        self.root_address = str(next(self.front.hosts()))
        """The root namespace's address on the front network: the deployment server, "the internet"."""
        taken = [self.root_address] + [h.front for h in hosts if h.front]
        if len(set(taken)) != len(taken) or len({h.lan for h in hosts}) != len(hosts):
            raise ValueError("lab addresses must be distinct (the front's first address is the root's)")
        fronted = [h for h in hosts if h.front]
        self.gateway: Optional[str] = fronted[0].name if len(fronted) == 1 else None
        """The host with a front interface, when there is exactly one."""
        self.lan_gateway = lan_gateway or (fronted[0].lan if len(fronted) == 1 else None)
        self.dir = Path(base_dir) / prefix
        self.base_dir = Path(base_dir)
        self.boot_timeout = boot_timeout
        self.tmpfs_size = tmpfs_size
        self.keep_on_failure = keep_on_failure
        self.clients: dict[str, str] = {}
        self._running: dict[str, _Running] = {}
        self._cleanups: list[tuple[str, Callable[[], None]]] = []
        self._state: dict = {"unreachable": []}
        self.timings: dict[str, float] = {}
        """Seconds: `prepare` (network, overlays), `ready <host>`, `up`, `down`."""
        self._t0 = 0.0

    # -- names --------------------------------------------------------------------------------------

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def uplink(self) -> str:
        """The root namespace's end of the front network."""
        return f"{self.prefix}-up"

    def netns(self, host: str) -> str:
        """The network namespace of a host or client."""
        return f"{self.prefix}-{host}"

    def machine(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def root_dir(self, host: str) -> Path:
        """The host's merged root (its / as seen from this machine)."""
        return self.dir / "hosts" / host / "root"

    def log_file(self, host: str) -> Path:
        return self.dir / f"{host}.log"

    def pid(self, host: str) -> int:
        """PID (in this machine's PID namespace) of the host's systemd; `nsenter -t PID -a bash` enters it."""
        running = self._running.get(host)
        if running is None or running.init is None:
            raise LabError(f"host {host} is not running")
        return running.init

    # -- running commands ---------------------------------------------------------------------------

    def run(self, host: str, cmd: Command, input: Optional[str] = None, check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command inside a host as root (all its namespaces). A string goes through `sh -c`."""
        argv = ["nsenter", "-t", str(self.pid(host)), "-a", *_argv(cmd)]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=HOST_ENV,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def netns_exec(self, ns: str, cmd: Command, input: Optional[str] = None, check: bool = True,
                   timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command from this machine's filesystem in one of the lab's network namespaces.

        `ns` is a namespace name (`lab.netns("h1")`, `lab.switch_ns`, a client's) or a host/client name.
        """
        if not ns.startswith(self.prefix + "-"):
            ns = self.netns(ns)
        if ns not in self._namespaces():
            raise LabError(f"{ns} is not a namespace of lab {self.prefix}")
        argv = ["ip", "netns", "exec", ns, *_argv(cmd)]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=HOST_ENV,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def _namespaces(self) -> set[str]:
        return {self.switch_ns, *(self.netns(h) for h in self.hosts), *self.clients.values()}

    # -- bring up -----------------------------------------------------------------------------------

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def _cleanup(self, what: str, fn: Callable[[], None]) -> None:
        self._cleanups.append((what, fn))

    def up(self) -> "Lab":
        """Bring every host up in parallel; return once each runs systemd (running/degraded) and sshd on :22."""
        ok, why = available()
        if not ok:
            raise LabError(f"the lab cannot run here: {why}")
        started = self._t0 = time.monotonic()
        try:
            stale = sweep(self.prefix, self.base_dir)
            if stale:
                print(f"lab {self.prefix}: removed leftovers of an earlier run: {', '.join(stale)}", file=sys.stderr)
            self._check_ranges_free()
            self._mount_lab_dir()
            self._network()
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
                list(pool.map(self._prepare_host, self.hosts.values()))
            self.timings["prepare"] = time.monotonic() - started
            for host in self.hosts:
                self._start(host)
            self._wait_ready()
            self.timings["up"] = time.monotonic() - started
        except BaseException:
            if not self.keep_on_failure:
                try:
                    self.down()
                except LabError as exc:  # the bring-up failure is the one to report
                    print(f"lab {self.prefix}: {exc}", file=sys.stderr)
            raise
        return self

    def _check_ranges_free(self) -> None:
        """Another lab (or anything else) using our ranges would make addresses ambiguous: refuse."""
        for r in json.loads(_sh(["ip", "-j", "-4", "route", "show"]).stdout or "[]"):
            if r.get("dst") in ("default", None):
                continue
            for net in (self.front, self.lan):
                if ipaddress.ip_network(r["dst"], strict=False).overlaps(net):
                    raise LabError(f"{net} is already routed on this machine ({r.get('type', '')} {r['dst']} "
                                   f"{r.get('dev', '')}); give lab {self.prefix} other ranges")

    def _mount_lab_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _sh(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_size},mode=0755", f"hypha-lab-{self.prefix}",
             str(self.dir)])
        self._cleanup("lab dir", self._remove_lab_dir)
        self._save_state()

    def _remove_lab_dir(self) -> None:
        _umount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        _remove_propagate_dirs(self.prefix)

    def _save_state(self) -> None:
        (self.dir / "state.json").write_text(json.dumps(self._state))

    def _network(self) -> None:
        sw = self.switch_ns
        _sh(["ip", "netns", "add", sw])
        self._cleanup(f"netns {sw}", lambda: self._del_netns(sw))
        for br in ("front", "lan"):
            _sh(["ip", "-n", sw, "link", "add", br, "type", "bridge", "forward_delay", "0"])
            _sh(["ip", "-n", sw, "link", "set", br, "up"])
        _sh(["ip", "link", "add", self.uplink, "type", "veth", "peer", "name", "root", "netns", sw])
        self._cleanup(f"link {self.uplink}", lambda: _sh(["ip", "link", "del", self.uplink], check=False))
        _sh(["ip", "-n", sw, "link", "set", "root", "master", "front", "up"])
        # Nothing from the lab is forwarded by this machine, and it speaks no IPv6 to it.
        for key, value in ((f"net.ipv4.conf.{self.uplink}.forwarding", "0"),
                           (f"net.ipv6.conf.{self.uplink}.disable_ipv6", "1")):
            _sh(["sysctl", "-q", "-w", f"{key}={value}"])
        _sh(["ip", "addr", "add", f"{self.root_address}/{self.front.prefixlen}", "dev", self.uplink])
        _sh(["ip", "link", "set", self.uplink, "up"])
        # This machine has a default route; without this, LAN addresses would be sent out of it.
        self._state["unreachable"].append(str(self.lan))
        self._save_state()
        _sh(["ip", "route", "add", "unreachable", str(self.lan)])
        self._cleanup(f"route unreachable {self.lan}",
                      lambda: _sh(["ip", "route", "del", "unreachable", str(self.lan)], check=False))
        for h in self.hosts.values():
            ns = self.netns(h.name)
            _sh(["ip", "netns", "add", ns])
            self._cleanup(f"netns {ns}", functools.partial(self._del_netns, ns))
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            if h.front:
                self._port(ns, f"f-{h.name}", "front", "front0", f"{h.front}/{self.front.prefixlen}")
            self._port(ns, f"l-{h.name}", "lan", "lan0", f"{h.lan}/{self.lan.prefixlen}")
            if h.front:
                _sh(["ip", "-n", ns, "route", "add", "default", "via", self.root_address, "dev", "front0"])
            elif self.lan_gateway:
                _sh(["ip", "-n", ns, "route", "add", "default", "via", self.lan_gateway, "dev", "lan0"])

    def _port(self, ns: str, port: str, bridge: str, ifname: str, cidr: str) -> None:
        sw = self.switch_ns
        _sh(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns])
        _sh(["ip", "-n", sw, "link", "set", port, "master", bridge, "up"])
        _sh(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])
        _sh(["ip", "-n", ns, "link", "set", ifname, "up"])

    def _del_netns(self, ns: str) -> None:
        if ns not in netns_list():
            return
        pids = netns_pids(ns)
        for pid in pids:  # only processes someone started inside a lab namespace
            _kill(pid)
        _wait_gone(pids, 5.0)
        _sh(["ip", "netns", "del", ns], check=False)

    def _prepare_host(self, h: LabHost) -> None:
        base = self.dir / "hosts" / h.name
        upper, work, root = base / "upper", base / "work", base / "root"
        for d in (upper, work, root):
            d.mkdir(parents=True)
        _sh(["mount", "-t", "overlay", f"hypha-{self.prefix}-{h.name}", "-o",
             f"lowerdir=/,upperdir={upper},workdir={work}", str(root)])
        self._cleanup(f"overlay {h.name}", functools.partial(_umount_under, root))
        _mask(root, _units_to_mask())
        _sh(["systemctl", f"--root={root}", "disable", *DISABLE], timeout=60, check=False)
        for rel in HIDE:  # a whiteout in the upper layer
            p = root / rel
            if p.exists() or p.is_symlink():
                p.unlink()
        (root / "etc/hostname").write_text(f"{h.name}\n")
        (root / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{h.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        # No resolver unless the lab provides one: fail fast instead of asking the machine's.
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        resolv.write_text("# lab host: no resolver\n")
        # Own host keys, as a fresh VM has (the machine's RSA key stays; converge replaces short RSA keys).
        for kind in ("ed25519", "ecdsa"):
            key = root / f"etc/ssh/ssh_host_{kind}_key"
            for p in (key, key.with_name(key.name + ".pub")):
                if p.exists():
                    p.unlink()
            _sh(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{h.name}", "-f", str(key)])

    def _start(self, host: str) -> None:
        root = self.root_dir(host)
        log = self.log_file(host)
        argv = [
            "systemd-nspawn", "--boot", "-D", str(root), "-M", self.machine(host),
            # Measured: without these nspawn wants machined/a scope unit, neither of which exists here.
            "--register=no", "--keep-unit", "--link-journal=no",
            f"--network-namespace-path=/run/netns/{self.netns(host)}",
            "--capability=CAP_NET_ADMIN",  # nft and `ip` inside the host
            # wireguard-go needs it; with --keep-unit there is no scope, so --property=DeviceAllow= is
            # ignored, and the device is usable through the bind alone.
            "--bind=/dev/net/tun",
            "--resolv-conf=off", "--timezone=off", "--console=read-only",
        ]
        fh = open(log, "wb")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=NSPAWN_ENV)
        finally:
            fh.close()
        self._running[host] = _Running(proc, log)
        self._cleanup(f"host {host}", functools.partial(self._stop, host))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        pending = set(self.hosts)
        state: dict[str, str] = {h: "starting nspawn" for h in self.hosts}
        while pending:
            for host in sorted(pending):
                r = self._running[host]
                if r.process.poll() is not None:
                    raise LabError(f"host {host}: systemd-nspawn exited {r.process.returncode} while booting\n"
                                   f"{self._tail(host)}")
                if r.init is None:
                    r.init = _init_pid(r.process.pid, self.netns(host))
                    if r.init is None:
                        continue
                st = self.run(host, ["systemctl", "is-system-running"], check=False, timeout=10).stdout.strip()
                state[host] = f"systemd {st or '?'}"
                if st not in ("running", "degraded"):
                    continue
                if st == "degraded" and not self._retry_failed_units(host):
                    state[host] = "systemd degraded, failed units being started again"
                    continue
                ss = self.netns_exec(self.netns(host), ["ss", "-ltnH", "sport = :22"], check=False, timeout=10)
                if ss.stdout.strip():
                    pending.discard(host)
                    self.timings[f"ready {host}"] = time.monotonic() - self._t0
                else:
                    state[host] = f"systemd {st}, sshd not listening yet"
            if not pending:
                break
            if time.monotonic() > deadline:
                host = sorted(pending)[0]
                raise LabError(
                    f"lab {self.prefix}: not up after {self.boot_timeout:.0f} s: "
                    + ", ".join(f"{h}: {state[h]}" for h in sorted(pending)) + f"\n{self._tail(host)}"
                )
            time.sleep(0.1)

    def _retry_failed_units(self, host: str) -> bool:
        """Start again what failed at boot; True when nothing that matters for logins is still failed.

        Seen here under load: a unit failing with 219/CGROUP ("Failed to attach to cgroup") while
        several hosts boot at once. systemd-user-sessions is the one that matters: until it has
        run, /run/nologin makes PAM refuse every login but root's.
        """
        failed = self.run(host, ["systemctl", "list-units", "--failed", "--plain", "--no-legend"],
                          check=False, timeout=10).stdout.splitlines()
        units = [line.split()[0] for line in failed if line.strip()]
        for unit in units:
            self.run(host, ["systemctl", "restart", unit], check=False, timeout=30)
        still = self.run(host, ["systemctl", "is-failed", "-q", "systemd-user-sessions.service"], check=False)
        gate = self.run(host, ["test", "-e", "/run/nologin"], check=False)
        return still.returncode != 0 and gate.returncode != 0

    def _tail(self, host: str, lines: int = 40) -> str:
        try:
            text = self.log_file(host).read_text(errors="replace")
        except OSError:
            return f"(no log for {host})"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return f"--- last {lines} lines of {self.log_file(host)} ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- clients ------------------------------------------------------------------------------------

    def add_client(self, name: str, address: str) -> str:
        """A bare network namespace on the front network (a member's laptop on the internet).

        It has front0 with `address` and no default route: it reaches the front network only.
        Returns the namespace name (for netns_exec / `ip netns exec`); removed with the lab.
        """
        if not NAME_RE.match(name) or name in self.hosts or name in self.clients or name == "sw":
            raise ValueError(f"bad or duplicate client name {name!r}")
        if ipaddress.ip_address(address) not in self.front:
            raise ValueError(f"client address {address} is not in the front network {self.front}")
        used = {self.root_address} | {h.front for h in self.hosts.values() if h.front}
        if address in used:
            raise ValueError(f"client address {address} is already used in the lab")
        ns = self.netns(name)
        _sh(["ip", "netns", "add", ns])
        self.clients[name] = ns
        self._cleanup(f"client {name}", functools.partial(self._del_netns, ns))
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._port(ns, f"c-{name}", "front", "front0", f"{address}/{self.front.prefixlen}")
        return ns

    # -- tear down ----------------------------------------------------------------------------------

    def _poweroff(self, host: str) -> bool:
        """Ask the host to power off, without waiting. False when there is no init to ask yet."""
        r = self._running.get(host)
        if r is None or r.process.poll() is not None:
            return True
        init = r.init or _init_pid(r.process.pid, self.netns(host))
        if init is None:
            return False
        r.init = init
        off = _sh(["nsenter", "-t", str(init), "-a", "systemctl", "poweroff", "--no-block"],
                  check=False, timeout=10, env=HOST_ENV)
        if off.returncode != 0:  # systemd not answering on its bus yet (still booting)
            _kill(init, signal.SIGRTMIN + 4)  # systemd's own "poweroff" signal
        return True

    def _stop(self, host: str) -> None:
        """Power the host off and wait (bounded); kill it when it does not go."""
        r = self._running.get(host)
        if r is None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        asked_at = time.monotonic() if r.poweroff_sent else None
        while r.process.poll() is None and time.monotonic() < deadline:
            # A request that reaches systemd before it set up its signal handlers and bus is lost
            # (a host stopped while still booting): ask again every second.
            if asked_at is None or time.monotonic() - asked_at > 1.0:
                if self._poweroff(host):
                    asked_at = time.monotonic()
            try:
                r.process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        if r.process.poll() is None:
            init = r.init or _init_pid(r.process.pid, self.netns(host))
            if init:
                _kill(init)  # ends the container's PID namespace; nspawn then exits
            try:
                r.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait(timeout=5)
        r.init = None

    def down(self) -> None:
        """Tear everything down. Safe to call twice and after a failed up()."""
        started = time.monotonic()
        errors: list[str] = []
        # Throw-away hosts keep nothing, so none is shut down cleanly: a unit slow to stop made a
        # lab's teardown wait out STOP_TIMEOUT (15 s, three labs in a CI run). Killing each host's
        # init ends its PID namespace and every process in it; nspawn then exits and the cleanups
        # below (each host's _stop, bounded) find it gone. A host stopped mid-test still
        # powers off as a VM would (_stop).
        for host, r in self._running.items():
            try:
                init = r.init or _init_pid(r.process.pid, self.netns(host))
                if init and r.process.poll() is None:
                    _kill(init)
                    r.init = init
                # No init yet (still booting): _stop asks it to power off until it has one, as before.
                r.poweroff_sent = init is not None or r.process.poll() is not None
            except Exception as exc:
                errors.append(f"kill {host}: {exc}")
        while self._cleanups:
            what, fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # keep going: the rest must still be removed
                errors.append(f"{what}: {exc}")
        self._running.clear()
        self.clients.clear()
        try:
            sweep(self.prefix, self.base_dir)
        except Exception as exc:
            errors.append(f"sweep: {exc}")
        self.timings["down"] = time.monotonic() - started
        if errors:
            raise LabError(f"lab {self.prefix}: teardown left errors: {'; '.join(errors)}")

    # -- description --------------------------------------------------------------------------------

    def first_boot(self, host: str, user_data: str, timeout: float = 180.0, pause: float = 0.0,
                   on_stage: Optional[Callable[[tuple], None]] = None) -> float:
        """What the VM's first boot does with its snippet: the real cloud-init, NoCloud datasource.

        Runs the init stages (users, write_files, host keys), set_passwords (which writes
        cloud-init's own sshd drop-in) and the final stage's deferred write_files (the deploy key),
        in that order, not the package stages: a lab host has no archive to install from.
        Returns the seconds it took. `pause` waits that long before each stage (a slow first boot);
        `on_stage` is called after each with the stage's arguments.
        """
        started = time.monotonic()
        root = self.root_dir(host)
        seed = root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "user-data").write_text(user_data)
        (seed / "meta-data").write_text(f"instance-id: {self.machine(host)}\nlocal-hostname: {host}\n")
        (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True, exist_ok=True)
        # The lab wires the interfaces itself; cloud-init must not rewrite them.
        (root / "etc/cloud/cloud.cfg.d/99-hypha-lab.cfg").write_text(
            "datasource_list: [NoCloud]\nnetwork: {config: disabled}\n"
        )
        for stage in FIRST_BOOT_STAGES:
            if pause:
                time.sleep(pause)
            self.run(host, ["cloud-init", *stage], timeout=timeout)
            if on_stage is not None:
                on_stage(stage)
        return time.monotonic() - started

    def describe(self) -> str:
        lines = [f"lab {self.prefix}: front {self.front} (this machine: {self.root_address} on {self.uplink}), "
                 f"LAN {self.lan} (no route from this machine), logs in {self.dir}"]
        for h in self.hosts.values():
            addrs = f"lan0 {h.lan}" + (f", front0 {h.front}" if h.front else f", default via {self.lan_gateway}")
            pid = self._running[h.name].init if h.name in self._running else None
            lines.append(f"  {h.name:<10} {addrs:<40} enter: nsenter -t {pid} -a bash")
        for name, ns in self.clients.items():
            lines.append(f"  client {name}: ip netns exec {ns} bash")
        return "\n".join(lines)
