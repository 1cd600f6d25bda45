"""Host tier, the backup attacks of issue 13 with real borg over real SSH: a client as root, with its own
key and passphrase (all an attacker there has), (a) deletes an archive and re-creates its name, (b) floods
future-dated empty archives, (c) deletes tonight's archive before the prune runs, (d) fills its repository
past the quota. After the target's next prune, compact, drill and offsite copy every real archive still
restores from the target or the offsite history, the target's metrics say what happened (what the alerts
read), and the client nobody attacked was pruned as usual.

Three clients: c1 suffers (a) and (c), c2 (d) and (b), c3 nothing. The target's watch timer runs
throughout, as in production: whether it or the prune catches an attack first, the outcome is the same.
HYPHA_BORG_TARGET_TOOL=<path> installs another borg-target.py on the target (to show these fail on the
old one). Runs in file order on one lab (module fixture).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from lab.backup import DATA, OFFSITE_HOST, OFFSITE_PATH, TARGET, Layout, lab_hosts, prepare
from lab.hosts import Lab, available
from lab.subnets import subnets
from render.roles import backup as rb
from render import metrics
from model import derive_backup as backup_model
from tests.test_backup_lab import Ctx

pytestmark = pytest.mark.lab

NETS = subnets("tbatk")
LAYOUT = Layout(
    NETS.prefix, NETS.front, NETS.lan, NETS.vpn, clients=("c1", "c2", "c3"),
    # c2's data is ~10 MB: 40 MB holds its real backups and leaves room to fill.
    backup={"storage_quota": "5G", "storage_quotas": {"c2": "40M"}}, offsite_index=9,
)
CLIENTS = LAYOUT.clients
TOOL = f"python3 {rb.TARGET_TOOL} --config {rb.TARGET_CONFIG}"


class AttackCtx(Ctx):
    real: dict  # client -> {archive name: id} of every archive a real backup made

    def url(self, client: str) -> str:
        return f"ssh://{rb.BORG_USER}@{self.stack.hosts[TARGET].lan_ip}{backup_model.repository(self.stack, client)}"

    def attack(self, client: str, args: str, check=False, timeout=300.0):
        """borg as root on the client. The attacker forgets what borg remembers of the repository first
        (root can), so a rollback the target made meanwhile does not stop the next step."""
        self.run(client, "rm -rf /root/.config/borg/security /root/.cache/borg", check=False)
        return self.client_borg(client, args, check=check, timeout=timeout)

    def backup(self, client: str):
        """A real backup (the client's own unit), recorded as real."""
        self.run(client, "rm -rf /root/.config/borg/security /root/.cache/borg", check=False)
        before = self.ids(client)
        r, _ = self.start(client, f"{rb.CLIENT_UNIT}.service")
        assert r.returncode == 0, self.journal(client, rb.CLIENT_UNIT)
        (new,) = set(self.ids(client).items()) - set(before.items())
        self.real.setdefault(client, {})[new[0]] = new[1]
        return new

    def ids(self, client: str) -> dict[str, str]:
        out = self.target_borg(client, f"list --json {backup_model.repository(self.stack, client)}").stdout
        return {a["archive"]: a["id"] for a in json.loads(out)["archives"]}

    def prom(self, name: str) -> str:
        return self.run(TARGET, ["cat", f"{metrics.TEXTFILE_DIR}/{name}"]).stdout

    def gauge(self, text: str, metric: str, **labels) -> float:
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
        m = re.search(rf"^{metric}{{{sel}}} (\S+)$", text, re.M)
        assert m, f"{metric}{{{sel}}} not in\n{text}"
        return float(m.group(1))

    def restores(self, host: str, client: str, repo: str, archive: str, env: str = "") -> bool:
        """`archive` extracts on `host` and its data directories are byte for byte what the client holds."""
        scratch = f"/tmp/restore-{client}-{archive}"
        dirs = " ".join(d.lstrip("/") for d in DATA[client])
        self.run(host, f"rm -rf {scratch} && mkdir -p {scratch}")
        try:
            if host == TARGET:
                env = (f"BORG_BASE_DIR={rb.BORG_HOME} BORG_RELOCATED_REPO_ACCESS_IS_OK=yes "
                       f"BORG_PASSPHRASE=\"$(cat {rb.PASSPHRASE_DIR}/{client})\"")
                self.run(TARGET, f"chown {rb.BORG_USER} {scratch} && cd {scratch} && "
                                 f"runuser -u {rb.BORG_USER} -- env {env} borg extract {repo}::{archive} {dirs}", timeout=300)
            else:
                self.run(host, f"cd {scratch} && env {env} borg extract {repo}::{archive} {dirs}", timeout=300)
            digest = "cd {d} && find . -type f -exec sha256sum {{}} + | sort -k2"
            return all(self.run(client, digest.format(d=d)).stdout == self.run(host, digest.format(d=f"{scratch}{d}")).stdout
                       for d in DATA[client])
        finally:
            self.run(host, f"rm -rf {scratch}", check=False)


@pytest.fixture(scope="module")
def ctx():
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    with Lab(LAYOUT.prefix, lab_hosts(LAYOUT), front=str(LAYOUT.front), lan=str(LAYOUT.lan)) as lab:
        p = prepare(lab, LAYOUT)
        c = AttackCtx(lab, p.ls, p.first, p.database, timings=p.timings, sizes=p.sizes)
        c.real = {}
        for host, result in p.first.items():
            assert result.ok, f"{host}: {result.stdout}\n{result.stderr}"
        other = os.environ.get("HYPHA_BORG_TARGET_TOOL")
        if other:
            lab.run(TARGET, f"cat >{rb.TARGET_TOOL}", input=Path(other).read_text())
        with concurrent.futures.ThreadPoolExecutor(len(CLIENTS)) as pool:
            list(pool.map(c.backup, CLIENTS))
        # c3 twice: with the third archive below, normal retention has one to prune (borg keeps the
        # newest of the day and, while fewer days than daily 7 exist, the oldest).
        c.backup("c3")
        yield c


# --- before: real backups, verified, copied offsite ---------------------------------------------------


def test_the_target_verifies_every_clients_first_backup_and_copies_it_into_the_offsite_history(ctx):
    r, _ = ctx.start(TARGET, f"{rb.target_unit('watch')}.service")
    assert r.returncode == 0, ctx.journal(TARGET, rb.target_unit("watch"))
    integrity = ctx.prom("hypha_borg_integrity.prom")
    for client in CLIENTS:
        assert ctx.gauge(integrity, metrics.REPOSITORY_TAMPERED, repository=client) == 0
        state = json.loads(ctx.run(TARGET, ["cat", f"{rb.ARCHIVE_STATE_DIR}/{client}.json"]).stdout)
        assert sorted(state["archives"]) == sorted(ctx.real[client].values())
    r, _ = ctx.start(TARGET, f"{rb.target_unit('offsite')}.service")
    assert r.returncode == 0, ctx.journal(TARGET, rb.target_unit("offsite"))
    for client in CLIENTS:
        snapshots = ctx.run(OFFSITE_HOST, f"ls {OFFSITE_PATH}/{client}").stdout.split()
        assert len([s for s in snapshots if re.fullmatch(r"\d{8}T\d{6}Z", s)]) == 1 and "latest" in snapshots


def test_every_client_backs_up_again_and_the_target_holds_the_quota_in_the_forced_command(ctx):
    for client in CLIENTS:
        ctx.backup(client)
    keys = ctx.run(TARGET, ["cat", rb.AUTHORIZED_KEYS]).stdout
    assert f"--restrict-to-repository {backup_model.repository(ctx.stack, 'c2')} --storage-quota 40M" in keys


# --- the attacks ----------------------------------------------------------------------------------------


def test_attack_a_c1_deletes_an_archive_and_recreates_its_name_with_nothing_in_it(ctx):
    name = min(ctx.real["c1"])
    assert ctx.attack("c1", f"delete {ctx.url('c1')}::{name}").returncode == 0
    ctx.run("c1", "mkdir -p /tmp/empty")
    created = ctx.attack("c1", f"create {ctx.url('c1')}::{name} /tmp/empty")
    assert created.returncode == 0, created.stderr
    assert ctx.ids("c1")[name] != ctx.real["c1"][name]
    # Minutes later the target's watch timer runs (started here rather than waited for).
    r, _ = ctx.start(TARGET, f"{rb.target_unit('watch')}.service")
    journal = ctx.journal(TARGET, rb.target_unit("watch"))
    assert r.returncode != 0
    assert f"c1: TAMPERED: archives deleted from the client side since the last verified state: {name}" in journal
    assert f"archive {name} was replaced under the same name" in journal
    assert ctx.ids("c1") == ctx.real["c1"]
    assert ctx.gauge(ctx.prom("hypha_borg_integrity.prom"), metrics.REPOSITORY_TAMPERED, repository="c1") == 1


def test_attack_c_c1_deletes_tonights_archive_before_the_prune_runs(ctx):
    """Made and deleted between two watches: only the log and the segments tell."""
    tonight, _id = ctx.backup("c1")
    assert ctx.attack("c1", f"delete {ctx.url('c1')}::{tonight}").returncode == 0
    assert tonight not in ctx.ids("c1")


def test_attack_d_c2_fills_its_repository_past_the_quota_and_is_refused_there(ctx):
    refused = None
    for i in range(20):  # bounded: 60 MB in 3 MB archives, past the 40 MB quota
        ctx.run("c2", f"mkdir -p /tmp/junk && head -c 3000000 /dev/urandom >/tmp/junk/f{i}")
        r = ctx.attack("c2", f"create {ctx.url('c2')}::junk-{i} /tmp/junk/f{i}")
        if r.returncode != 0:
            refused = r
            break
    assert refused is not None and "quota" in refused.stderr.lower(), refused
    # The target reports the repository at its quota (what BackupRepositoryNearQuota reads).
    r, _ = ctx.start(TARGET, f"{rb.target_unit('metrics')}.service")
    assert r.returncode == 0
    sizes = ctx.prom("hypha_borg.prom")
    size = ctx.gauge(sizes, metrics.REPOSITORY_SIZE, repository="c2")
    quota = ctx.gauge(sizes, metrics.REPOSITORY_QUOTA, repository="c2")
    assert quota == 40 * 10**6 and size / quota > 0.9, (size, quota)


def test_attack_b_c2_floods_future_dated_empty_archives(ctx):
    ctx.run("c2", "mkdir -p /tmp/empty")
    for day in range(1, 16):
        stamp = f"2027-01-{day:02d}T12:00:00"
        assert ctx.attack("c2", f"create --timestamp {stamp} {ctx.url('c2')}::flood-{day} /tmp/empty").returncode == 0


# --- the target's next night ----------------------------------------------------------------------------


def test_after_the_next_prune_every_real_archive_is_back_and_the_attacked_repositories_are_marked(ctx):
    r, _ = ctx.start(TARGET, f"{rb.target_unit('prune')}.service")
    journal = ctx.journal(TARGET, rb.target_unit("prune"), 80) + ctx.journal(TARGET, rb.target_unit("watch"), 200)
    assert r.returncode != 0, journal  # the exit status says some repositories were refused
    for client in ("c1", "c2"):
        have = ctx.ids(client)
        for name, archive_id in ctx.real[client].items():
            assert have.get(name) == archive_id, f"{client}: real archive {name} lost\n{journal}"
    assert not [n for n in ctx.ids("c2") if n.startswith("flood-")]
    assert "an archive created and deleted in between" in journal and "is dated 2027-01-" in journal
    integrity = ctx.prom("hypha_borg_integrity.prom")
    prune = ctx.prom("hypha_borg_prune.prom")
    for client in ("c1", "c2"):
        assert ctx.gauge(integrity, metrics.REPOSITORY_TAMPERED, repository=client) == 1
        assert ctx.gauge(prune, metrics.TARGET_JOB_OK, task="prune", repository=client) == 0
    # The client nobody attacked was pruned as usual: of its three archives of today, borg's retention
    # keeps the newest (daily) and the oldest (fewer days than daily 7 so far).
    assert ctx.gauge(integrity, metrics.REPOSITORY_TAMPERED, repository="c3") == 0
    assert ctx.gauge(prune, metrics.TARGET_JOB_OK, task="prune", repository="c3") == 1
    names = sorted(ctx.real["c3"])
    assert ctx.ids("c3") == {n: ctx.real["c3"][n] for n in (names[0], names[-1])}
    assert "c3: kept 2 archive(s), pruned 1" in journal
    for client in CLIENTS:
        ctx.target_borg(client, f"check {backup_model.repository(ctx.stack, client)}", timeout=600)


def test_the_drill_restores_the_real_latest_archive_of_every_repository_that_has_one(ctx):
    r, _ = ctx.start(TARGET, f"{rb.target_unit('drill')}.service")
    status = json.loads(ctx.run(TARGET, ["cat", rb.DRILL_STATUS]).stdout)["repositories"]
    # c1's latest is tonight's real archive, back from its deletion; c3's is its own. c2's newest archive
    # is the attacker's junk (honestly dated, so retention would count it): the drill says so.
    assert status["c1"]["ok"] and status["c3"]["ok"], status
    assert not status["c2"]["ok"] and "canary" in status["c2"]["error"]
    assert r.returncode != 0


def test_the_offsite_copy_adds_a_snapshot_and_keeps_the_one_from_before_the_attacks(ctx):
    r, _ = ctx.start(TARGET, f"{rb.target_unit('offsite')}.service")
    assert r.returncode == 0, ctx.journal(TARGET, rb.target_unit("offsite"))
    for client in CLIENTS:
        snapshots = sorted(s for s in ctx.run(OFFSITE_HOST, f"ls {OFFSITE_PATH}/{client}").stdout.split()
                           if re.fullmatch(r"\d{8}T\d{6}Z", s))
        assert len(snapshots) == 2
        link = ctx.run(OFFSITE_HOST, f"readlink {OFFSITE_PATH}/{client}/latest").stdout.strip()
        assert link == snapshots[-1]
        # Unchanged segments are hardlinks into the older snapshot, not copies.
        links = ctx.run(OFFSITE_HOST, f"find {OFFSITE_PATH}/{client}/{snapshots[0]}/data -type f -links +1 | wc -l").stdout
        assert int(links) > 0


def test_every_real_archive_restores_from_the_target_or_the_offsite_history(ctx):
    for client in CLIENTS:
        repo = backup_model.repository(ctx.stack, client)
        on_target = ctx.ids(client)
        first = sorted(s for s in ctx.run(OFFSITE_HOST, f"ls {OFFSITE_PATH}/{client}").stdout.split()
                       if re.fullmatch(r"\d{8}T\d{6}Z", s))[0]
        env = (f"BORG_PASSPHRASE={shlex.quote(ctx.ls.late[f'borg/passphrase/{client}'])} "
               "BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=/tmp/borg-restore")
        history = f"{OFFSITE_PATH}/{client}/{first}"
        in_history = ctx.run(OFFSITE_HOST, f"env {env} borg list --short {history}").stdout.split()
        for name, archive_id in sorted(ctx.real[client].items()):
            if on_target.get(name) == archive_id:
                assert ctx.restores(TARGET, client, repo, name), f"{client}::{name} on the target"
            else:
                # Only what normal retention pruned (c3's older archive) or what came after the first copy
                # may be missing on the target; the first snapshot holds everything from before the attacks.
                assert client == "c3" and name in in_history, f"{client}::{name} is nowhere"
                assert ctx.restores(OFFSITE_HOST, client, history, name, env), f"{client}::{name} offsite"
