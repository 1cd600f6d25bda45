"""The backup target's verification with real borg on this machine (file tier, seconds): clients reach
their repository through the same forced `borg serve --append-only --storage-quota` as on the target
(a local stand-in for ssh runs it), and the target tool judges what they did from the repository itself.

The lab (tests/test_backup_attack_lab.py) runs the same attacks over real SSH between hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from render.roles import backup as rb
from render import metrics
from render.templates import TEMPLATES

pytestmark = pytest.mark.files

TOOL = TEMPLATES / "backup_target/borg-target.py"
CLIENTS = ("c1", "c2")
PASSPHRASE = "correct horse battery staple"


def _need_borg():
    if shutil.which("borg") is None:
        pytest.fail("borg is missing: apt-get install borgbackup (make setup installs it)")


class Target:
    def __init__(self, root: Path, quota: str = "50M"):
        _need_borg()
        self.root = root
        self.repos = root / "repos"
        self.state = root / "state"
        for d in (self.repos, self.state / "archives", root / "passphrases", root / "prom", root / "home", root / "src"):
            d.mkdir(parents=True, exist_ok=True)
        self.cfg = {
            "host": "bk", "user": "root", "borg_home": str(root / "home"), "repository_dir": str(self.repos),
            "repositories": {}, "retention": {"daily": 7, "weekly": 4, "monthly": 3}, "canary": "canary",
            "canary_max_age_seconds": 3600, "scratch": str(root / "scratch"), "status": str(root / "status.json"),
            "archive_state": str(self.state / "archives"), "archive_time_slack_seconds": rb.ARCHIVE_TIME_SLACK_SECONDS,
            "textfile_dir": str(root / "prom"), "offsite": None,
            "metrics": {"drill_last_success": metrics.DRILL_LAST_SUCCESS, "drill_ok": metrics.DRILL_OK,
                        "repository_size": metrics.REPOSITORY_SIZE, "repository_free": metrics.REPOSITORY_FREE,
                        "repository_quota": metrics.REPOSITORY_QUOTA, "tampered": metrics.REPOSITORY_TAMPERED,
                        "verified": metrics.REPOSITORY_VERIFIED, "job_ok": metrics.TARGET_JOB_OK},
        }
        for c in CLIENTS:
            (root / "passphrases" / c).write_text(PASSPHRASE + "\n")
            self.cfg["repositories"][c] = {"path": str(self.repos / c), "passphrase_file": str(root / "passphrases" / c),
                                           "expect": [], "quota_bytes": 50 * 10**6}
            # What the client's ssh reaches: the forced command of authorized_keys, nothing else.
            rsh = root / f"ssh-{c}"
            rsh.write_text(f"#!/bin/sh\nexec borg serve --append-only --restrict-to-repository {self.repos / c} "
                           f"--storage-quota {quota}\n")
            rsh.chmod(0o755)
        (root / "target.json").write_text(json.dumps(self.cfg))
        (root / "src" / "data").write_bytes(os.urandom(200_000))
        for c in CLIENTS:
            self.client(c, f"init --encryption=repokey-blake2 {self.url(c)}")

    def url(self, c: str) -> str:
        return f"ssh://borg@bk{self.repos / c}"

    def client(self, c: str, args: str, check: bool = True):
        """borg as the client: its own key and passphrase, through the forced command only."""
        env = dict(os.environ, BORG_RSH=str(self.root / f"ssh-{c}"), BORG_PASSPHRASE=PASSPHRASE,
                   BORG_BASE_DIR=str(self.root / f"client-{c}"), BORG_DELETE_I_KNOW_WHAT_I_AM_DOING="YES",
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        r = subprocess.run(["sh", "-c", f"borg {args}"], env=env, cwd=self.root / "src", capture_output=True, text=True)
        assert not check or r.returncode == 0, r.stderr
        return r

    def backup(self, c: str, name: str, extra: str = ""):
        return self.client(c, f"create {extra} {self.url(c)}::{name} data")

    def tool(self, *args: str):
        return subprocess.run([sys.executable, str(TOOL), "--config", str(self.root / "target.json"), *args],
                              capture_output=True, text=True, timeout=300)

    def archives(self, c: str) -> dict[str, str]:
        env = dict(os.environ, BORG_PASSPHRASE=PASSPHRASE, BORG_BASE_DIR=str(self.root / "home"),
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        r = subprocess.run(["borg", "list", "--json", str(self.repos / c)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        return {a["archive"]: a["id"] for a in json.loads(out)["archives"]}

    def prom(self, name: str) -> str:
        return (self.root / "prom" / name).read_text()


@pytest.fixture
def target(tmp_path):
    t = Target(tmp_path)
    for c in CLIENTS:
        t.backup(c, f"{c}-1")
    r = t.tool("watch")
    assert r.returncode == 0, r.stdout + r.stderr
    return t


def test_a_deleted_archive_recreated_under_its_name_is_rolled_back_and_the_repository_marked(target):
    real = target.archives("c1")
    target.client("c1", f"delete {target.url('c1')}::c1-1")
    (target.root / "src" / "data").write_bytes(b"")
    target.backup("c1", "c1-1")
    assert target.archives("c1")["c1-1"] != real["c1-1"]
    r = target.tool("watch")
    assert r.returncode == 1
    assert "c1: TAMPERED: archives deleted from the client side since the last verified state: c1-1" in r.stdout
    assert "archive c1-1 was replaced under the same name" in r.stdout
    assert target.archives("c1") == real
    assert f'{metrics.REPOSITORY_TAMPERED}{{repository="c1"}} 1' in target.prom("hypha_borg_integrity.prom")
    assert f'{metrics.REPOSITORY_TAMPERED}{{repository="c2"}} 0' in target.prom("hypha_borg_integrity.prom")
    # The prune stops for c1 until an admin accepts; c2 is pruned as usual, and the exit status says which failed.
    r = target.tool("prune")
    assert r.returncode == 1 and "c1: REFUSED: archives deleted from the client side" in r.stdout
    assert "(marked tampered since" in r.stdout and "c2: kept 1 archive(s)" in r.stdout
    job = target.prom("hypha_borg_prune.prom")
    assert f'{metrics.TARGET_JOB_OK}{{task="prune",repository="c1"}} 0' in job
    assert f'{metrics.TARGET_JOB_OK}{{task="prune",repository="c2"}} 1' in job
    assert target.tool("accept", "c1").returncode == 0
    assert target.tool("prune").returncode == 0
    assert f'{metrics.REPOSITORY_TAMPERED}{{repository="c1"}} 0' in target.prom("hypha_borg_integrity.prom")


def test_future_dated_archives_are_rolled_back_and_the_real_ones_survive_the_prune(target):
    real = target.archives("c1")
    for day in range(1, 11):
        target.backup("c1", f"c1-flood-{day}", extra=f"--timestamp 2027-0{1 + day % 9}-1{day % 10}T12:00:00")
    r = target.tool("prune")
    assert r.returncode == 1 and "is dated 2027-" in r.stdout and "c1: TAMPERED" in r.stdout
    assert target.archives("c1") == real


def test_an_archive_made_and_deleted_between_two_verifications_is_still_caught(target):
    target.backup("c1", "c1-2")
    tonight = target.archives("c1")
    target.client("c1", f"delete {target.url('c1')}::c1-2")
    r = target.tool("prune")
    assert r.returncode == 1 and "c1: TAMPERED" in r.stdout
    assert target.archives("c1") == tonight


def test_honest_backups_and_the_admins_own_deletes_on_the_target_are_not_tampering(target):
    target.backup("c1", "c1-2")
    env = dict(os.environ, BORG_PASSPHRASE=PASSPHRASE, BORG_BASE_DIR=str(target.root / "home"),
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_DELETE_I_KNOW_WHAT_I_AM_DOING="YES")
    subprocess.run(["borg", "delete", f"{target.repos / 'c1'}::c1-1"], env=env, check=True, capture_output=True)
    r = target.tool("prune")
    assert r.returncode == 0, r.stdout
    assert list(target.archives("c1")) == ["c1-2"]


def test_a_client_that_rewrites_the_repository_key_is_rolled_back_to_the_saved_config(target):
    real = target.archives("c1")
    r = subprocess.run(["sh", "-c", f"BORG_NEW_PASSPHRASE=attacker borg key change-passphrase {target.url('c1')}"],
                       env=dict(os.environ, BORG_RSH=str(target.root / "ssh-c1"), BORG_PASSPHRASE=PASSPHRASE,
                                BORG_BASE_DIR=str(target.root / "client-c1")), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = target.tool("watch")
    assert out.returncode == 1 and "the repository's config (its key) was rewritten" in out.stdout
    assert target.archives("c1") == real  # readable with the target's passphrase again


def test_a_client_cannot_commit_past_its_quota_and_the_others_are_unaffected(target):
    big = target.root / "src" / "big"
    big.write_bytes(os.urandom(60 * 10**6))
    r = target.client("c1", f"create {target.url('c1')}::c1-fill big", check=False)
    assert r.returncode != 0 and "quota" in r.stderr.lower(), r.stderr
    target.backup("c2", "c2-2")
    assert target.tool("prune").returncode == 0
    assert list(target.archives("c1")) == ["c1-1"] and sorted(target.archives("c2")) == ["c2-1", "c2-2"]
    sizes = target.prom("hypha_borg.prom")
    assert f'{metrics.REPOSITORY_QUOTA}{{repository="c1"}} {50 * 10**6}' in sizes


def test_one_broken_repository_never_stops_the_others_and_each_failure_is_reported(target):
    # c1's passphrase file gone (a broken converge, a full disk): c1 fails, c2 is still verified and pruned.
    os.unlink(target.cfg["repositories"]["c1"]["passphrase_file"])
    target.backup("c2", "c2-2")
    for job in ("watch", "prune"):
        r = target.tool(job)
        assert r.returncode == 1 and f"c1: {job} FAILED: FileNotFoundError" in r.stdout, r.stdout
        assert f"{job} FAILED for: c1\n" in r.stdout
        text = target.prom(f"hypha_borg_{job}.prom")
        assert f'{metrics.TARGET_JOB_OK}{{task="{job}",repository="c1"}} 0' in text
        assert f'{metrics.TARGET_JOB_OK}{{task="{job}",repository="c2"}} 1' in text
    assert "c2: kept 2 archive(s)" in r.stdout


def test_a_client_transaction_compacted_before_it_was_verified_marks_the_repository(target):
    """The one window left: a commit between the prune's last verification and its compact."""
    env = dict(os.environ, BORG_PASSPHRASE=PASSPHRASE, BORG_BASE_DIR=str(target.root / "home"),
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_DELETE_I_KNOW_WHAT_I_AM_DOING="YES")
    target.client("c1", f"delete {target.url('c1')}::c1-1")
    # What the prune's compact would do right after: the client's delete made final, its segments gone.
    subprocess.run(["borg", "compact", str(target.repos / "c1")], env=env, check=True, capture_output=True)
    r = target.tool("watch")
    assert r.returncode == 1 and "were compacted before they could be verified" in r.stdout, r.stdout
    assert f'{metrics.REPOSITORY_TAMPERED}{{repository="c1"}} 1' in target.prom("hypha_borg_integrity.prom")
