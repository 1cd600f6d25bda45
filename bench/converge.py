"""Prints how long our converge script takes on a bare lab host and on a converged one, next to an
ansible-core playbook doing the same base role on an identical lab host in the same run.

    .venv/bin/python bench/converge.py [--quick]      (or `make bench`; root: it runs the lab of lab/hosts.py)

Targets: our first converge at most 1/3 of Ansible's, our no-op re-run at most 1/10 of Ansible's.
Figures only: it exits 0 and says plainly when a target is missed (non-zero only when it could not
measure at all). Ansible is not a project requirement: it lives in its own virtualenv, made once
and cached in /tmp. The playbook is bench/ansible/base.yml; the files it installs are rendered by
render/roles/, so both tools write the same bytes, and the bench checks afterwards that the hosts
ended up the same. `--quick` (tests/test_bench_lab.py, so the bench cannot rot): one round of ours
alone (a first converge and a re-run on one bare host), no Ansible, whose virtualenv comes from
PyPI and a test reaches no network; no ratio judged.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.hosts import Lab, available, layout  # noqa: E402
from lab.stack import LabStack, lab_stack  # noqa: E402
from lab.subnets import subnets  # noqa: E402
from ops.remote import LATE, PINS, converge  # noqa: E402
from render.converge import converge_script  # noqa: E402
from render.roles.base import PEOPLE_GROUP  # noqa: E402
from render.plan import HostPlan  # noqa: E402
from render.roles import host_plan  # noqa: E402
from model import derive  # noqa: E402

ANSIBLE_CORE = "2.19.14"  # the newest ansible-core whose controller runs on Python 3.11
ANSIBLE_VENV = Path("/tmp/hypha-bench-ansible-venv")
PLAYBOOK = ROOT / "bench" / "ansible" / "base.yml"

PREFIX = "hbench"
FRONT, LAN, VPN = subnets(PREFIX).front, subnets(PREFIX).lan, subnets(PREFIX).vpn
# One round per pair (ours, Ansible's) of identical bare hosts. The second round runs Ansible first,
# so neither tool always gets the warmer machine.
ROUNDS = (("a", "b", "ours first"), ("a2", "b2", "ansible first"))
LAB_HOSTS = ("a", "b", "a2", "b2")
# lab_stack gives the last host the monitoring role: `mon` exists only in the stack (never booted),
# so every benchmarked host has the same role and the same firewall rules.
STACK_HOSTS = ("gw", *LAB_HOSTS, "mon")

TARGET_FIRST = 1 / 3
TARGET_RERUN = 1 / 10
RUN_TIMEOUT = 300.0

# The daemon's own checker per ManagedFile.check, as a `validate:` command (%s: the staged file).
# sshd cannot check a drop-in alone: like the converge script, check a copy of sshd_config whose
# Include points at the live drop-ins with the staged one in its place.
_SSHD_CHECK = (
    'd=$(mktemp -d) && mkdir -p /run/sshd && '
    'for f in /etc/ssh/sshd_config.d/*.conf; do [ -e "$f" ] && cp "$f" "$d/"; done; '
    'cp "$1" "$d/$2" && '
    'sed "s#^Include /etc/ssh/sshd_config.d/\\*.conf#Include $d/*.conf#" /etc/ssh/sshd_config >"$d/sshd_config" && '
    'sshd -t -f "$d/sshd_config"; rc=$?; rm -rf "$d"; exit $rc'
)
VALIDATE = {
    "sshd": "sh -c '" + _SSHD_CHECK + "' hypha-sshd-check %s {name}",
    "sudoers": "visudo -c -q -f %s",
    "nftables": "nft -c -f %s",
    "apt": "apt-config -c %s dump",
    "shell": "sh -n %s",
    "authorized_keys": "ssh-keygen -l -f %s",
}


# ---------------------------------------------------------------------------------------------------
# ansible-core in its own virtualenv


def ansible_venv() -> Path:
    """The cached virtualenv with the pinned ansible-core; made (bounded) when missing or of another version."""
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    marker = ANSIBLE_VENV / ".hypha-bench-ansible-core"
    if playbook.exists() and marker.exists() and marker.read_text().strip() == ANSIBLE_CORE:
        return ANSIBLE_VENV
    print(f"creating {ANSIBLE_VENV} with ansible-core=={ANSIBLE_CORE} (once) ...", flush=True)
    started = time.perf_counter()
    if ANSIBLE_VENV.exists():
        shutil.rmtree(ANSIBLE_VENV)
    subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True, timeout=120)
    subprocess.run(
        [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         f"ansible-core=={ANSIBLE_CORE}"],
        check=True, timeout=300,
    )
    marker.write_text(ANSIBLE_CORE + "\n")
    print(f"  made in {time.perf_counter() - started:.1f} s", flush=True)
    return ANSIBLE_VENV


@dataclass
class AnsibleRun:
    seconds: float
    returncode: int
    output: str
    ssh: int
    """Remote commands over the run's persistent connection: module runs and Ansible's tmp-dir housekeeping."""
    sftp: int
    """file transfers."""
    connections: int
    """TCP connections through the gateway (ProxyCommand runs)."""

    @property
    def recap(self) -> dict[str, int]:
        m = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)", self.output)
        keys = ("ok", "changed", "unreachable", "failed", "skipped")
        return dict(zip(keys, map(int, m.groups()))) if m else {}

    @property
    def ok(self) -> bool:
        r = self.recap
        return self.returncode == 0 and bool(r) and r["failed"] == 0 and r["unreachable"] == 0

    def changed_tasks(self) -> list[str]:
        """Names of tasks and handlers that reported a change (from the default callback's output)."""
        names, task = [], None
        for line in self.output.splitlines():
            m = re.match(r"(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
            if m:
                task = m.group(1)
            elif line.startswith("changed:") and task:
                item = re.search(r"\(item=(.*)\)$", line)
                name = f"{task} ({item.group(1)})" if item and "Managed files" not in task else task
                if name not in names:
                    names.append(name)
        return names


class Ansible:
    """ansible-playbook against the lab's Ansible hosts: OpenSSH as the deploy user through the gateway."""

    def __init__(self, venv: Path, ls: LabStack, plans: dict[str, HostPlan], hosts: list[str], work: Path):
        self.venv = venv
        self.ls = ls
        self.plans = plans
        self.work = work
        self.cp_dir = work / "cp"
        self.counts = work / "ssh-count.log"
        for d in (self.cp_dir, work / "home", work / "files"):
            d.mkdir(parents=True)
        key = ls.keys["deploy"].write(work / "deploy_key")
        gw = derive.gateway_address(ls.stack)
        self.quiet = quiet = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes"
                 " -o LogLevel=ERROR")
        # Wrappers only count: each logs a line and execs the real client.
        self._script("ssh", f'echo ssh >>{self.counts}\nexec ssh "$@"\n')
        self._script("sftp", f'echo sftp >>{self.counts}\nexec sftp "$@"\n')
        self._script("proxy", f'echo connection >>{self.counts}\nexec ssh {quiet} -i {key} -W "$1" deploy@{gw}\n')
        inventory = {
            "all": {
                "hosts": {h: {"ansible_host": str(ls.stack.hosts[h].lan_ip)} for h in hosts},
                "vars": {
                    "ansible_user": derive.DEPLOY_USER,
                    "ansible_ssh_private_key_file": str(key),
                    "ansible_ssh_common_args": f"-o ProxyCommand='{work}/proxy %h:%p' {quiet}",
                },
            }
        }
        (work / "inventory.yml").write_text(json.dumps(inventory, indent=1))
        # The usual tuning for a fair run: no host key prompts, pipelining, a persistent connection per
        # run (ControlPersist; closed between runs so every run starts cold, as ours does), no
        # interpreter discovery, no compression on a LAN.
        (work / "ansible.cfg").write_text(
            "[defaults]\n"
            f"inventory = {work}/inventory.yml\n"
            "host_key_checking = False\n"
            "interpreter_python = /usr/bin/python3\n"
            "gathering = explicit\n"
            "retry_files_enabled = False\n"
            "nocolor = True\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            # Dial again when a host's sshd is restarting (first boot), as ops.remote does.
            "retries = 3\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n"
            f"control_path_dir = {self.cp_dir}\n"
            f"ssh_executable = {work}/ssh\n"
            f"sftp_executable = {work}/sftp\n"
            "transfer_method = sftp\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        self.env.update(
            ANSIBLE_CONFIG=str(work / "ansible.cfg"),
            ANSIBLE_HOME=str(work / "home"),  # nothing in /root/.ansible
            ANSIBLE_LOCAL_TEMP=str(work / "home" / "tmp"),
            LC_ALL="C.UTF-8",
            PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        )
        self.vars = {h: self._vars(h) for h in hosts}

    def _script(self, name: str, body: str) -> None:
        p = self.work / name
        p.write_text("#!/bin/sh\n" + body)
        p.chmod(0o755)

    def _vars(self, host: str) -> Path:
        """The playbook's data for one host, from the same HostPlan our converge script is made of."""
        plan = self.plans[host]
        if getattr(plan, "derive", None):
            raise SystemExit(f"{host}: the playbook has no equivalent of derive steps; bench a host with the base role only")
        files_dir = self.work / "files" / host
        files_dir.mkdir()
        files = []
        for i, f in enumerate(plan.files):
            src = files_dir / f"f{i}"
            src.write_bytes(f.content.encode())
            item = {"src": str(src), "path": f.path, "mode": f.mode, "owner": f.owner, "group": f.group,
                    "notify": [f"{'restart' if f.action == 'restart' else 'reload'} {f.unit}"] if f.unit else []}
            if f.check:
                if f.check not in VALIDATE:
                    raise SystemExit(f"{host}: no validate command for checker {f.check!r} of {f.path}")
                item["validate"] = VALIDATE[f.check].format(name=shlex.quote(os.path.basename(f.path)))
            files.append(item)
        data = {
            "hypha_packages": sorted(set(plan.packages)),
            "hypha_people_group": PEOPLE_GROUP,
            "hypha_people": [{"name": a.name, "gecos": a.gecos} for a in plan.people],
            "hypha_deploy_user": derive.DEPLOY_USER,
            "hypha_dirs": sorted({os.path.dirname(f.path) for f in plan.files}),
            "hypha_files": files,
            "hypha_units": list(dict.fromkeys(plan.units)),
        }
        path = self.work / f"vars-{host}.json"
        path.write_text(json.dumps(data, indent=1))
        return path

    def version(self) -> str:
        out = subprocess.run([str(self.venv / "bin" / "ansible-playbook"), "--version"], env=self.env,
                             capture_output=True, text=True, timeout=60, cwd=self.work)
        return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else f"unknown ({out.stderr.strip()})"

    def run(self, host: str) -> AnsibleRun:
        self.counts.write_text("")
        argv = [str(self.venv / "bin" / "ansible-playbook"), "--limit", host, "-e", f"@{self.vars[host]}", str(PLAYBOOK)]
        started = time.perf_counter()
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                                  cwd=self.work, stdin=subprocess.DEVNULL)
            seconds, code, output = time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            seconds, code = time.perf_counter() - started, -1
            output = f"{exc.stdout or ''}\n(timed out after {RUN_TIMEOUT:.0f} s)"
        finally:
            self.close_connections()
        words = self.counts.read_text().split()
        result = AnsibleRun(seconds, code, output, words.count("ssh"), words.count("sftp"), words.count("connection"))
        if result.recap.get("unreachable"):
            result.output += "\n--- the same login with ssh -v, for the reason ---\n" + self.probe(host)
        return result

    def probe(self, host: str) -> str:
        """One login to `host` as Ansible makes it, with OpenSSH's own account of what failed."""
        argv = ["ssh", "-v", *shlex.split(self.quiet.replace("LogLevel=ERROR", "LogLevel=VERBOSE")),
                "-o", f"ProxyCommand={self.work}/proxy %h:%p", "-i", str(self.work / "deploy_key"),
                f"deploy@{self.ls.stack.hosts[host].lan_ip}", "sudo -n true && echo login-ok"]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "(ssh -v timed out after 30 s)"
        return "\n".join((p.stderr + p.stdout).splitlines()[-25:])

    def close_connections(self) -> None:
        """Stop the ControlPersist masters (bounded), so the next run starts cold and the lab can go down."""
        for sock in list(self.cp_dir.iterdir()):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "hypha-bench"],
                           capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while any(self.cp_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _processes_mentioning(str(self.work)):  # only clients this bench started
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


# ---------------------------------------------------------------------------------------------------
# what a host ends up holding


def _state_script(plan: HostPlan) -> str:
    q = shlex.quote
    lines = ["set +e"]
    for f in plan.files:
        lines.append(f"echo \"file {f.path} $(sha256sum {q(f.path)} | cut -d' ' -f1) $(stat -c '%a %U %G' {q(f.path)})\"")
    for name in [a.name for a in plan.people] + [derive.DEPLOY_USER]:
        lines.append(f"echo \"user {name} $(getent passwd {name}) groups=$(id -nG {name} | tr ' ' ,)"
                     f" expire=$(getent shadow {name} | cut -d: -f8) pw=$(getent shadow {name} | cut -d: -f2 | cut -c1)\"")
        lines.append(f"echo \"home {name} $(stat -c '%a %U %G' ~{name})\"")
    lines.append(f"echo \"group {PEOPLE_GROUP} $(getent group {PEOPLE_GROUP} | cut -d: -f3-)\"")
    for unit in dict.fromkeys(plan.units):
        lines.append(f"echo \"unit {unit} $(systemctl is-enabled {unit}) $(systemctl is-active {unit})\"")
    for pkg in sorted(set(plan.packages)):
        lines.append(f"echo \"package {pkg} $(dpkg-query -W -f='${{db:Status-Status}} ${{Version}}' {pkg})\"")
    lines += [
        "echo \"hostkey rsa $(ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub | cut -d' ' -f1)"
        " $(stat -c '%a %U %G' /etc/ssh/ssh_host_rsa_key)\"",
        "echo \"hostkey ed25519 $(ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f1)\"",
        "echo \"ssh moduli $(sha256sum /etc/ssh/moduli | cut -d' ' -f1) $(stat -c '%a %U %G' /etc/ssh/moduli)\"",
        # What the handlers must have done: the ruleset loaded, node_exporter on the LAN address.
        "echo \"nft ruleset $(nft list ruleset | sha256sum | cut -d' ' -f1)\"",
        "echo \"listen 9100 $(ss -ltnH 'sport = :9100' | awk '{print $4}' | sort | tr '\\n' ' ')\"",
        "echo \"sshd effective $(sshd -T 2>/dev/null | grep -v '^listenaddress' | sort | sha256sum | cut -d' ' -f1)\"",
    ]
    return "\n".join(lines) + "\n"


def host_state(lab: Lab, ls: LabStack, plan: HostPlan) -> dict[str, str]:
    """One line per fact about the host; the host's own LAN address replaced by <lan>."""
    host = plan.host
    out = lab.run(host, ["sh", "-s"], input=_state_script(plan), timeout=60).stdout
    lan = str(ls.stack.hosts[host].lan_ip)
    state = {}
    for line in out.replace(lan, "<lan>").splitlines():
        kind, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        state[f"{kind} {name}"] = value.strip()
    return state


@dataclass
class Comparison:
    mismatches: list[str] = field(default_factory=list)
    identical_files: int = 0
    host_specific_files: int = 0
    facts: int = 0


def compare(lab: Lab, ls: LabStack, plans: dict[str, HostPlan], ours: str, theirs: str) -> Comparison:
    """`theirs` (Ansible's host) against `ours`: every managed file as planned for its host (sha256, mode,
    owner), and every other fact (users, units, packages, host keys, moduli, loaded ruleset) the same."""
    result = Comparison()
    states = {h: host_state(lab, ls, plans[h]) for h in (ours, theirs)}
    files = {h: {f.path: f for f in plans[h].files} for h in (ours, theirs)}
    for path in files[ours]:
        for h in (ours, theirs):
            f = files[h][path]
            lan = str(ls.stack.hosts[h].lan_ip)
            want = f"{hashlib.sha256(f.content.encode()).hexdigest()} {int(f.mode, 8):o} {f.owner} {f.group}"
            have = states[h].pop(f"file {path}", "(missing)")
            if have != want.replace(lan, "<lan>"):
                result.mismatches.append(f"{h}: {path}: have {have}, want {want}")
        if files[ours][path].content == files[theirs][path].content:
            result.identical_files += 1
        else:
            result.host_specific_files += 1
    for key in sorted(set(states[ours]) | set(states[theirs])):
        result.facts += 1
        a, b = states[ours].get(key, "(missing)"), states[theirs].get(key, "(missing)")
        if a != b:
            result.mismatches.append(f"{key}: {ours} has {a!r}, {theirs} has {b!r}")
    if states[ours].get("hostkey rsa", "").split()[:1] != ["4096"]:
        result.mismatches.append(f"{ours}: RSA host key is not 4096 bits: {states[ours].get('hostkey rsa')}")
    return result


def unit_marks(lab: Lab, plan: HostPlan) -> dict[str, str]:
    """Per unit, what moves when it is started or restarted: main PID, activation and condition times."""
    units = list(dict.fromkeys([*plan.units, "systemd-journald"]))
    out = lab.run(plan.host, ["systemctl", "show", "-p", "Id,MainPID,ActiveEnterTimestampMonotonic,"
                              "ConditionTimestampMonotonic", *units]).stdout
    marks = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        marks[props.pop("Id", "?").removesuffix(".service")] = " ".join(f"{k}={v}" for k, v in sorted(props.items()))
    return marks


def touched_units(before: dict[str, str], after: dict[str, str]) -> str:
    touched = [u for u in after if before.get(u) != after[u]]
    return ", ".join(touched) or "none"


# ---------------------------------------------------------------------------------------------------
# the run


@dataclass
class Ours:
    seconds: float
    ok: bool
    summary: str
    actions: int
    output: str


def run_ours(ls: LabStack, host: str, script: str) -> Ours:
    started = time.perf_counter()
    r = converge(ls.stack, host, ls.keys["deploy"].private_openssh, script=script)
    seconds = time.perf_counter() - started
    done = re.search(r"done: .*", r.stdout)
    actions = len(re.findall(r"^converge: (?!done:)", r.stdout, flags=re.M))
    return Ours(seconds, r.ok, done.group(0) if done else "(no summary)", actions, r.stdout + r.stderr)


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    rounds = ROUNDS[:1] if quick else ROUNDS
    booted = (ROUNDS[0][0],) if quick else LAB_HOSTS
    ok, why = available()
    if not ok:
        print(f"bench/converge.py needs the lab: {why}")
        return 0
    venv = None if quick else ansible_venv()
    ls = lab_stack("prod", hosts=STACK_HOSTS, front=FRONT, lan=LAN, vpn=VPN)
    roles = {h: sorted(ls.stack.hosts[h].roles) for h in LAB_HOSTS}
    assert len({tuple(r) for r in roles.values()}) == 1, roles
    # Rendered once, up front, for both tools: what the run installs cannot change half-way.
    plans = {h: host_plan(ls.stack, h) for h in ("gw", *LAB_HOSTS)}
    scripts = {h: converge_script(ls.stack, h, plans[h]) for h in plans}
    work = Path(tempfile.mkdtemp(prefix="hypha-bench-ansible-run."))
    lab = Lab(PREFIX, layout("gw", booted, front=str(FRONT), lan=str(LAN)), front=str(FRONT), lan=str(LAN))
    ansible = None
    results: list = []
    try:
        if not quick:
            ansible = Ansible(venv, ls, plans, [b for _, b, _ in ROUNDS], work)
        print(f"targets: our first converge <= 1/{round(1 / TARGET_FIRST)} of Ansible's, "
              f"our no-op re-run <= 1/{round(1 / TARGET_RERUN)} of Ansible's")
        print(f"ansible: {ansible.version()} ({venv}); playbook {PLAYBOOK.relative_to(ROOT)}" if ansible
              else "ansible: left out (--quick)")
        lab.up()
        print(f"lab {PREFIX}: front {FRONT}, LAN {LAN}; gw + {', '.join(booted)} "
              f"(role {roles['a']}) up in {lab.timings['up']:.1f} s")
        started = time.perf_counter()
        hosts = ["gw", *booted]
        with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(lambda h: lab.first_boot(h, ls.user_data(h)), hosts))
        PINS.add(ls.known_hosts())  # the sessions below trust the lab's host keys only
        # The scripts above carry the host keys as late values, filled on the way as the program's are.
        LATE.update({**ls.host_key_late(), **ls.late})
        print(f"first boot (cloud-init) of every host: {time.perf_counter() - started:.1f} s (not timed)")
        gw = run_ours(ls, "gw", scripts["gw"])
        if not gw.ok:
            print(f"the gateway did not converge:\n{gw.output[-3000:]}")
            return 1
        print(f"gateway converged: {gw.seconds:.2f} s (not timed)")

        for ours_host, their_host, order in rounds:
            print(f"\nround {len(results) + 1} ({order}): ours on {ours_host}, ansible on {their_host}")
            steps = ["ours", "ansible"] if order == "ours first" else ["ansible", "ours"]
            if quick:
                steps = ["ours"]
            r: dict = {}
            for tool in steps:
                if tool == "ours":
                    r["ours1"] = run_ours(ls, ours_host, scripts[ours_host])
                    before = unit_marks(lab, plans[ours_host])
                    r["ours2"] = run_ours(ls, ours_host, scripts[ours_host])
                    touched = touched_units(before, unit_marks(lab, plans[ours_host]))
                    for label, o in (("first converge", r["ours1"]), ("re-run", r["ours2"])):
                        print(f"  ours    {label:<15} {o.seconds:7.2f} s  {'ok' if o.ok else 'FAILED'}; "
                              f"{o.actions} action line(s); {o.summary}")
                        if not o.ok:
                            print(o.output[-3000:])
                    print(f"          units the re-run started or restarted: {touched}")
                else:
                    r["ans1"] = ansible.run(their_host)
                    before = unit_marks(lab, plans[their_host])
                    r["ans2"] = ansible.run(their_host)
                    touched = touched_units(before, unit_marks(lab, plans[their_host]))
                    for label, a in (("first converge", r["ans1"]), ("re-run", r["ans2"])):
                        recap = " ".join(f"{k}={v}" for k, v in a.recap.items())
                        print(f"  ansible {label:<15} {a.seconds:7.2f} s  {'ok' if a.ok else 'FAILED'}; {recap}; "
                              f"{a.ssh} ssh command runs, {a.sftp} sftp transfers, {a.connections} connection(s)")
                        print(f"          changed: {', '.join(a.changed_tasks()) or 'nothing'}")
                        if not a.ok:
                            print(a.output[-4000:])
                    print(f"          units the re-run started or restarted: {touched}")
                    if "systemd-timesyncd" in " ".join(r["ans2"].changed_tasks()):
                        print("          (systemd-timesyncd does not run in a container: its condition fails, so "
                              "it stays inactive; the systemd module starts it again on every run and reports "
                              "a change, where our script leaves a unit alone once systemd has said so)")
            if quick:
                results.append((r, None))
                continue
            cmp_ = compare(lab, ls, plans, ours_host, their_host)
            print(f"  {their_host} vs {ours_host}: {cmp_.identical_files + cmp_.host_specific_files} managed files "
                  f"checked on both (sha256, mode, owner; {cmp_.identical_files} byte-identical across the two, "
                  f"{cmp_.host_specific_files} carry the host's own address), {cmp_.facts} other facts "
                  f"(users, group, units, packages, host keys, moduli, loaded ruleset, :9100 listener, "
                  f"effective sshd config): {len(cmp_.mismatches)} mismatch(es)")
            for m in cmp_.mismatches:
                print(f"    MISMATCH {m}")
            results.append((r, cmp_))
        if not quick:
            report(results)
    finally:
        if ansible is not None:
            ansible.close_connections()
        try:
            lab.down()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # Non-zero only when nothing could be measured; a missed target is a figure, not an error.
    return 0 if any(all(x.ok for x in r.values()) for r, _ in results) else 1


def report(results) -> None:
    tasks_part, _, handlers_part = PLAYBOOK.read_text().partition("\n  handlers:\n")
    tasks = len(re.findall(r"^    - name:", tasks_part, flags=re.M))
    handlers = len(re.findall(r"^    - name:", handlers_part, flags=re.M))
    ours_name, their_name = "ours (converge.sh)", f"ansible-core {ANSIBLE_CORE}"
    print()
    print(f"{'tool':<24} {'round':>5} {'first converge s':>17} {'re-run s':>9}")
    for i, (r, _) in enumerate(results, 1):
        print(f"{ours_name:<24} {i:>5} {r['ours1'].seconds:>17.2f} {r['ours2'].seconds:>9.2f}")
        print(f"{their_name:<24} {i:>5} {r['ans1'].seconds:>17.2f} {r['ans2'].seconds:>9.2f}")
    # A round where a run failed timed an error path: it does not count.
    valid = [(r, c) for r, c in results if all(x.ok for x in r.values())]
    if len(valid) < len(results):
        print(f"({len(results) - len(valid)} round(s) with a failed run left out of the means and ratios)")
    if not valid:
        print("no round completed: no ratios (see FAILED above)")
        return
    mean = lambda key: sum(r[key].seconds for r, _ in valid) / len(valid)  # noqa: E731
    print(f"{ours_name:<24} {'mean':>5} {mean('ours1'):>17.2f} {mean('ours2'):>9.2f}")
    print(f"{their_name:<24} {'mean':>5} {mean('ans1'):>17.2f} {mean('ans2'):>9.2f}")
    print()
    r0 = valid[0][0]
    print("ours: one SSH session through the gateway and one script per run")
    print(f"ansible: {tasks} tasks in the play (one includes managed-file.yml once per file a unit reads) + "
          f"{handlers} handlers; per run (first/re-run): {r0['ans1'].recap.get('ok')}/{r0['ans2'].recap.get('ok')} "
          f"tasks ok, {r0['ans1'].ssh}/{r0['ans2'].ssh} ssh command runs over {r0['ans1'].connections}/"
          f"{r0['ans2'].connections} connection(s), {r0['ans1'].sftp}/{r0['ans2'].sftp} sftp transfers")
    print()
    for label, ours_key, their_key, target in (("first converge", "ours1", "ans1", TARGET_FIRST),
                                               ("no-op re-run", "ours2", "ans2", TARGET_RERUN)):
        per_round = [r[ours_key].seconds / r[their_key].seconds for r, _ in valid]
        ratio = mean(ours_key) / mean(their_key)
        met = ratio <= target and all(x <= target for x in per_round)
        print(f"ratio ours/ansible, {label}: {ratio:.3f} of the means (rounds: "
              f"{', '.join(f'{x:.3f}' for x in per_round)}); target <= {target:.3f} (1/{round(1 / target)}): "
              + ("met" if met else f"TARGET MISSED (ours takes {ratio:.2f}x Ansible's time)"))
    mismatches = sum(len(c.mismatches) for _, c in results)
    print(f"end state of Ansible's hosts vs ours: {mismatches} mismatch(es)"
          + ("" if not mismatches else " -- NOT the same work, the figures do not compare (see MISMATCH lines)"))


if __name__ == "__main__":
    sys.exit(main())
