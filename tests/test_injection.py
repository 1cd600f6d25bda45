"""File tier: config values that validation still accepts are inert wherever they land.

For every string field of the real stacks (found by walking the config and the model, so a field
added later is covered without editing this file), hostile values are tried: a shell command
substitution, backticks, `;`, quote breaking, newlines, `${IFS}`, `%` specifiers, each carrying a
canary command `touch HYPHAPWNED-<n>`. The ones `build_stack` accepts are packed into a few stacks
(every field hostile at once), and each host's whole converge script runs in a sandbox: a private
mount and network namespace, an overlay of `/` with its upper layer on a tmpfs, chroot, and
recording stubs for what would reach outside (systemctl, apt-get, certbot, borgmatic, pip). The
script's own checkers (sshd -t, nginx -t, nft -c, visudo, promtool, amtool, borgmatic, ssh-keygen,
named-checkzone, sh -n) run for real on the hostile files. The canary must never appear, the
script must succeed, and the stubs must receive each hostile value as one exact argument. The
rendered units (systemd-analyze verify), known_hosts (ssh-keygen -l), YAML (safe_load) and
cloud-init user-data (cloud-init schema) are checked too.

The counts (accepted pairs, rounds, sandbox runs) are printed: `pytest -s tests/test_injection.py`.
"""

from __future__ import annotations

import concurrent.futures
import copy
import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pydantic
import pytest
import yaml
from _pytest.mark.expression import Expression  # how `-m` itself reads the expression

from render import quote
from render.cloud_init import user_data
from render.converge import converge_script, fill, late_names
from render.plan import LATE_MARK
from render.roles import host_plan
from model import derive
from model.errors import ConfigError
from model.load import build_stack
from tests.program_runs import STACKS, raw
from tests.tools import need as _need

pytestmark = pytest.mark.lab

CANARY = "HYPHAPWNED"
# Each payload runs `touch HYPHAPWNED-<index>` if anything ever evaluates it as shell.
PAYLOADS = [
    "$(touch /tmp/{c})",
    "`touch /tmp/{c}`",
    ";touch {c};",
    "';touch {c};'",
    '";touch {c};"',
    "\ntouch {c}\n",
    "%n${{IFS}}&&touch${{IFS}}{c}",
    "#\r\ntouch {c} #",
    "\\\";touch {c};#",
    " -o ProxyCommand=touch${{IFS}}{c} ",
]
CANARY_FILE = re.compile(rf"(^|/){CANARY}-[0-9]+$")


def payload(i: int) -> str:
    return PAYLOADS[i].format(c=f"{CANARY}-{i}")


# --- which fields, which hostile values validation lets through ------------------------------------


def _raw_leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _raw_leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _raw_leaves(v, (*path, i))
    elif isinstance(node, str):
        yield path, node


def _model_defaults(model, node, path=()):
    """String fields the stack file leaves at their default, in sections it has: hostile there too."""
    if not isinstance(model, pydantic.BaseModel) or not isinstance(node, dict):
        return
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, pydantic.BaseModel):
            yield from _model_defaults(value, node.get(name), (*path, name))
        elif isinstance(value, dict):
            for k, v in value.items():
                sub = node.get(name, {})
                yield from _model_defaults(v, sub.get(k) if isinstance(sub, dict) else None, (*path, name, k))
        elif isinstance(value, str) and name not in node:
            yield (*path, name), value


def string_fields(stack: str) -> list[tuple[tuple, str]]:
    base = raw(stack)
    fields = dict(_raw_leaves(base))
    fields.update(_model_defaults(build_stack(base, stack), base))
    return sorted(fields.items(), key=lambda kv: tuple(map(str, kv[0])))


def _put(cfg: dict, path: tuple, value) -> None:
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _accepts(cfg: dict, stack: str) -> bool:
    try:
        build_stack(cfg, stack)
    except ConfigError:
        return False
    return True


@dataclass(frozen=True)
class Pair:
    path: tuple
    payload: int
    value: str

    @property
    def key(self) -> str:
        return ".".join(map(str, self.path))


@lru_cache(maxsize=None)
def accepted_pairs(stack: str) -> tuple[Pair, ...]:
    """Every (field, payload) validation accepts, in the first placement it accepts (end, start, middle)."""
    base = raw(stack)
    pairs = []
    for path, seed in string_fields(stack):
        for i in range(len(PAYLOADS)):
            p, mid = payload(i), len(seed) // 2
            for value in (seed + p, p + seed, seed[:mid] + p + seed[mid:]):
                cfg = copy.deepcopy(base)
                _put(cfg, path, value)
                if _accepts(cfg, stack):
                    pairs.append(Pair(path, i, value))
                    break
    return tuple(pairs)


@dataclass
class Round:
    """One stack with as many hostile values at once as validation accepts together."""

    cfg: dict
    pairs: list[Pair] = field(default_factory=list)


def _systemd_calendar_ok(value: str) -> bool:
    res = subprocess.run(["systemd-analyze", "calendar", value], capture_output=True, timeout=30)
    return res.returncode == 0


CALENDAR_GAP = "systemd-analyze calendar refuses it: the timer would never fire"


def validation_gap(stack: str, pair: Pair) -> str | None:
    """Why the value is one only validation can stop (no writer can make it mean what the field says),
    or None. Found with the readers' own parsers, so a field 11a tightens simply stops showing up."""
    seed = dict(string_fields(stack))[pair.path]
    if str(pair.path[-1]).endswith("schedule") and _systemd_calendar_ok(seed) and not _systemd_calendar_ok(pair.value):
        return CALENDAR_GAP
    try:
        seed_is_v6 = "%" not in seed and ipaddress.IPv6Address(seed) is not None
        hostile = ipaddress.IPv6Address(pair.value)
    except ValueError:
        return None
    if seed_is_v6 and hostile.scope_id:
        return "an IPv6 address with a scope id (%...): named-checkzone refuses the AAAA record"
    return None


@lru_cache(maxsize=1)
def _host_keys() -> dict[str, str]:
    """One set of host keys for every snippet: what they hold does not depend on the config."""
    from lab.stack import host_key_material

    return host_key_material()


def _render_all(m) -> None:
    for host in m.hosts:
        converge_script(m, host)
        user_data(m, host, _host_keys())


def _refused_alone(stack: str, pair: Pair) -> bool:
    cfg = copy.deepcopy(raw(stack))
    _put(cfg, pair.path, pair.value)
    try:
        _render_all(build_stack(cfg, stack))
    except quote.QuoteError:
        return True
    return False


@lru_cache(maxsize=None)
def rounds(stack: str) -> tuple[tuple[Round, ...], tuple[tuple[Pair, str], ...]]:
    """The accepted pairs packed into stacks (each field takes another payload in each round), and the
    pairs a writer refused at render time (QuoteError: inert by refusal), with the writer's message."""
    # A calendar the timer cannot parse is inert in the converge (no checker reads it): it stays in.
    todo = [p for p in accepted_pairs(stack) if validation_gap(stack, p) in (None, CALENDAR_GAP)]
    refused: list[tuple[Pair, str]] = []
    out: list[Round] = []
    for _ in range(len(todo) + 1):  # bounded: every round places at least one pair
        if not todo:
            break
        r = Round(copy.deepcopy(raw(stack)))
        used: set[tuple] = set()
        for pair in sorted(todo, key=lambda p: (p.payload + len(out)) % len(PAYLOADS)):
            if pair.path in used:
                continue
            trial = copy.deepcopy(r.cfg)
            _put(trial, pair.path, pair.value)
            if _accepts(trial, stack):
                r.cfg, r.pairs = trial, [*r.pairs, pair]
                used.add(pair.path)
        assert r.pairs, f"no pair of {[p.key for p in todo]} validates alone any more"
        # A writer that refuses a value (it cannot be written inertly) fails the render: drop that pair.
        for _ in range(len(r.pairs) + 1):
            try:
                _render_all(build_stack(r.cfg, stack))
                break
            except quote.QuoteError as exc:
                culprits = [p for p in r.pairs if p.value in exc.value or exc.value in p.value]
                if len(culprits) > 1:
                    culprits = [p for p in culprits if _refused_alone(stack, p)]
                assert culprits, f"cannot tell which value the writer refused: {exc}"
                for culprit in culprits:
                    refused.append((culprit, str(exc)))
                    r.pairs.remove(culprit)
                    _put(r.cfg, culprit.path, dict(string_fields(stack))[culprit.path])
        todo = [p for p in todo if p not in r.pairs and p not in {x for x, _ in refused}]
        out.append(r)
    return tuple(out), tuple(refused)


# --- the sandbox ------------------------------------------------------------------------------------

STUB = """#!/bin/sh
# Recording stub: one record per call (fields \\037, records \\036) in /hypha-out/calls.
{{ printf '%s\\037' "$(basename "$0")"; for a; do printf '%s\\037' "$a"; done; printf '\\036'; }} >>/hypha-out/calls
{body}
"""
STUBS = {
    "systemctl": "exit 0",
    "apt-get": "exit 0",
    "certbot": "exit 0",
    "borgmatic": "exit 0",
}
# python3 -m venv (the pve-exporter install) would fetch from PyPI: make an empty venv with a stub pip.
PYTHON_WRAPPER = """#!/bin/sh
if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then
	mkdir -p "$3/bin" && cp /usr/local/sbin/pip-stub "$3/bin/pip" && exit 0
fi
exec /usr/bin/python3 "$@"
"""
DRIVER = r"""set -eu
T=$1 PREP=$2 OUT=$3
mount -t tmpfs -o size=512m,mode=0755 hypha-injection "$T"
mkdir "$T/upper" "$T/work" "$T/root"
# A lower layer may not sit inside another one (ELOOP): the stubs' layer goes on the tmpfs too.
cp -a "$PREP" "$T/prep"
mount -t overlay hypha-injection -o "lowerdir=$T/prep:/,upperdir=$T/upper,workdir=$T/work" "$T/root"
mount -t proc proc "$T/root/proc"
mount --rbind /dev "$T/root/dev"
mount -t tmpfs -o mode=0755 run "$T/root/run"
mount --bind "$OUT" "$T/root/hypha-out"
rc=0
chroot "$T/root" /bin/sh /hypha-out/converge.sh >"$OUT/log" 2>&1 </dev/null || rc=$?
echo "$rc" >"$OUT/rc"
# Every file the run made or changed is in the upper layer: a canary anywhere there was executed.
find "$T/upper" -print >"$OUT/upper-files"
"""




@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """The sandbox's top lower layer: stubs first on the script's PATH, host keys made once."""
    if os.geteuid() != 0:
        pytest.fail("the injection sandbox needs root (mount namespace, overlayfs, chroot)")
    top = tmp_path_factory.mktemp("injection-prep")
    sbin = top / "usr/local/sbin"
    sbin.mkdir(parents=True)
    for name, body in {**STUBS, "pip-stub": "exit 0"}.items():
        (sbin / name).write_text(STUB.format(body=body))
        (sbin / name).chmod(0o755)
    (top / "usr/local/bin").mkdir(parents=True)
    (top / "usr/local/bin/python3").write_text(PYTHON_WRAPPER)
    (top / "usr/local/bin/python3").chmod(0o755)
    (top / "hypha-out").mkdir()
    ssh = top / "etc/ssh"
    ssh.mkdir(parents=True)
    # What the machine's own sshd_config refers to, so a run need not make 4096-bit keys each time.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "ssh_host_ed25519_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-f", str(ssh / "ssh_host_rsa_key")], check=True)
    return top


@dataclass
class Result:
    rc: int
    log: str
    canaries: list[str]
    calls: list[list[str]]


def run_in_sandbox(script: str, prep: Path, work: Path) -> Result:
    out, mnt = work / "out", work / "mnt"
    out.mkdir(parents=True)
    mnt.mkdir()
    (out / "converge.sh").write_text(script)
    (work / "driver.sh").write_text(DRIVER)
    done = subprocess.run(
        [_need("unshare"), "--mount", "--net", "--fork", "sh", str(work / "driver.sh"), str(mnt), str(prep), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"sandbox did not come up: {done.stderr}"
    calls_file = out / "calls"
    # Bytes, not text: universal newlines would turn a hostile \r\n into \n.
    records = calls_file.read_bytes().decode().split("\x1e")[:-1] if calls_file.exists() else []
    calls = [r.split("\x1f")[:-1] for r in records]
    upper = (out / "upper-files").read_text().splitlines()
    return Result(int((out / "rc").read_text()), (out / "log").read_text(), [p for p in upper if CANARY_FILE.search(p)], calls)


def late_value(m):
    """name -> a real-looking late value, as components/ would make it (keys where keys go)."""
    from tests.test_converge_render import _sample
    from tests.test_monitoring_render import late_values as monitoring_values

    known = monitoring_values(m) if m.monitoring else {}
    # `borg/offsite/ssh-key` names its kind last, not second to last as the per-host keys do.
    return lambda name: known.get(name) or _sample(f"{name}/offsite" if name.endswith("/ssh-key") else name)


def _filled(m, host: str) -> str:
    value = late_value(m)
    script = converge_script(m, host)
    return fill(script, {n: value(n) for n in late_names(script)})


# --- the tests --------------------------------------------------------------------------------------


# Round 0 already puts a payload in every accepted field; later rounds try the other payloads. `make
# test` runs the first few rounds per stack (about 14 s each here), `make fuzz` all of them (0 = all).
SANDBOX_ROUNDS = int(os.environ.get("HYPHA_INJECTION_ROUNDS", "3"))


def _lab_selected(config: pytest.Config) -> bool:
    """Whether `-m` keeps this file's tier: `make test-program` and `make test-files` collect every
    file and deselect by marker, and the rounds below (thousands of validations) would be worked
    out at their collection for tests they then drop."""
    markexpr = config.getoption("markexpr")
    return not markexpr or Expression.compile(markexpr).evaluate(lambda name, **_: name == "lab")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The sandbox rounds as parameters, worked out only when the lab tier runs; otherwise one
    # placeholder each, which `-m` then deselects with the rest of the file.
    if {"stack", "index"} <= set(metafunc.fixturenames):
        cases = list(_cases()) if _lab_selected(metafunc.config) else [pytest.param("-", -1, id="lab-tier-not-selected")]
        metafunc.parametrize("stack,index", cases)


def _cases():
    for stack in STACKS:
        done = len(rounds(stack)[0])
        for i in range(done if SANDBOX_ROUNDS <= 0 else min(done, SANDBOX_ROUNDS)):
            yield pytest.param(stack, i, id=f"{stack}-round{i}")


def test_validation_still_accepts_hostile_values_in_many_fields_and_each_is_run():
    """The count this file reports; every accepted pair is in a round or refused by its writer."""
    for stack in STACKS:
        pairs = accepted_pairs(stack)
        done, refused = rounds(stack)
        placed = [p for r in done for p in r.pairs]
        gaps = [(p, validation_gap(stack, p)) for p in pairs if validation_gap(stack, p)]
        left_out = [p for p, why in gaps if why != CALENDAR_GAP]
        assert sorted(placed + [p for p, _ in refused] + left_out, key=repr) == sorted(pairs, key=repr)
        fields = {p.path for p in pairs}
        print(f"\n{stack}: {len(string_fields(stack))} string fields x {len(PAYLOADS)} payloads: "
              f"{len(pairs)} pairs accepted by validation in {len(fields)} fields; {len(placed)} run through "
              f"the sandbox in {len(done)} round(s) x {len(build_stack(done[0].cfg, stack).hosts) if done else 0} hosts; "
              f"{len(refused)} refused by a writer at render time; {len(gaps)} only validation can stop")
        for p, why in gaps:
            print(f"  validation gap: {p.key} payload {p.payload}: {why}")
        for p, why in refused:
            print(f"  refused at render: {p.key} payload {p.payload}: {why[:120]}")


# The hosts of a round are independent, and each one's checks run one process at a time: one host
# per core (a round of 8 hosts took 31 s one after the other here, the second core idle).
HOST_WORKERS = max(1, min(4, os.cpu_count() or 1))


def test_hostile_values_never_run_and_every_converge_still_succeeds(tmp_path, prep, stack, index):
    r = rounds(stack)[0][index]
    m = build_stack(r.cfg, stack)
    with concurrent.futures.ThreadPoolExecutor(max_workers=HOST_WORKERS) as pool:
        checks = [pool.submit(_hostile_host_check, m, host, tmp_path, prep) for host in sorted(m.hosts)]
        for check in checks:
            check.result()  # the host's own failure, raised here


def _hostile_host_check(m, host: str, tmp_path: Path, prep: Path) -> None:
    script = _filled(m, host)
    syntax = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, timeout=60)
    assert syntax.returncode == 0, f"{host}: {syntax.stderr}"
    (tmp_path / f"{host}.sh").write_text(script)
    # SC2016 ("expressions don't expand in single quotes") is the point here: the `$(...)` is a literal.
    lint = subprocess.run([_need("shellcheck"), "-s", "sh", "-e", "SC2016", str(tmp_path / f"{host}.sh")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, f"{host}: {lint.stdout[:3000]}"
    result = run_in_sandbox(script, prep, tmp_path / host)
    assert result.canaries == [], f"{host}: a hostile value ran: {result.canaries}"
    assert result.rc == 0, f"{host}: the converge failed with hostile values in it:\n{result.log[-3000:]}"
    if "reverse_proxy" in m.hosts[host].roles and m.tls is not None:
        certbot = [c for c in result.calls if c[0] == "certbot"]
        assert certbot, result.log[-2000:]
        for call in certbot:
            # The hostile e-mail and directory arrive as exactly one argument each.
            assert call[call.index("--email") + 1] == m.tls.email
            assert call[call.index("--server") + 1] == str(m.tls.acme_directory)


def test_units_key_files_and_yaml_with_hostile_values_pass_their_checkers(tmp_path, stack, index):
    r = rounds(stack)[0][index]
    m = build_stack(r.cfg, stack)
    value = late_value(m)
    # (A value no unit can hold at all never reached one: the writer would have stopped the render.)
    calendar_gaps = [p for p in r.pairs if validation_gap(stack, p) == CALENDAR_GAP and "\n" not in p.value
                     and "\r" not in p.value]
    seeds = dict(string_fields(stack))
    units = tmp_path / "units"
    units.mkdir()
    for host in sorted(m.hosts):
        for f in host_plan(m, host).files:
            content = LATE_MARK.sub(lambda x: value(x.group(1)), f.content)
            name = Path(f.path).name
            if f.path.startswith("/etc/systemd/system/") and name.endswith((".service", ".timer")):
                # A calendar systemd cannot parse is a validation gap (listed by the count test), not a
                # quoting one: it goes back to the field's own value so the rest of the unit is verified.
                for p in calendar_gaps:
                    content = content.replace(f"={quote.systemd_value(p.value)}\n", f"={quote.systemd_value(seeds[p.path])}\n")
                # Executables that exist here: verify checks ExecStart= paths, not what they do.
                (units / name).write_text(re.sub(r"^(Exec\w*=)\S+", r"\1/bin/true", content, flags=re.M))
            elif name == "known_hosts":
                path = tmp_path / f"{host}-known_hosts"
                path.write_text(content)
                res = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, timeout=30)
                assert res.returncode == 0 and len(content.splitlines()) == 1, f"{host}: {content!r}"
            elif name.endswith((".yml", ".yaml")):
                assert yaml.safe_load(content) is not None, f"{host}:{f.path}"
        if host in (derive.gateway_name(m), sorted(m.hosts)[0]):
            # Two hosts' user-data (the bastion's and another's): the rest differ only in host name.
            doc = tmp_path / f"{host}-user-data.yaml"
            doc.write_text(user_data(m, host, _host_keys()))
            assert yaml.safe_load(doc.read_text())["hostname"] == host
            res = subprocess.run([_need("cloud-init"), "schema", "--config-file", str(doc)], capture_output=True, text=True,
                                 timeout=120)
            assert res.returncode == 0, f"{host}: {res.stdout}{res.stderr}"
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, sorted(units.iterdir()))],
                         capture_output=True, text=True, timeout=120, cwd=units)
    assert res.returncode == 0, res.stderr


def test_the_sandbox_would_see_a_canary_that_ran(tmp_path, prep):
    """The check above can fail: an unquoted value in the script runs its canary where the test looks."""
    m = build_stack(raw("staging"), "staging")
    script = _filled(m, "gateway").replace("# 1. Packages", f"echo x; touch /tmp/{CANARY}-0 # 1. Packages", 1)
    result = run_in_sandbox(script, prep, tmp_path / "bad")
    assert result.rc == 0, result.log[-2000:]
    assert [Path(c).name for c in result.canaries] == [f"{CANARY}-0"]
