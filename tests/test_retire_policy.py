"""Removing a prod host that holds data (issue 16 item 5): the pack refuses it unless the change
carries the replacement allow (prod-vm-no-replacement) and names a final backup of the host taken
after the last deployment (prod-data-host-removal). Both ways, on the program's own runs."""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import pytest

from model.load import read_stack_config
from ops.mockrun import run_stack
from ops.policy_check import evaluate, export_state, load_policy_config
from policy.replacement import ALLOW_REPLACE_ENV, BASELINE_ENV, FINAL_BACKUP_ENV

pytestmark = pytest.mark.program

REMOVAL = "prod-data-host-removal"
REPLACEMENT = "prod-vm-no-replacement"
DEPLOYED = "2026-11-30T12:00:00Z"


@functools.lru_cache(maxsize=None)
def _committed_run():
    return run_stack("prod", raw=read_stack_config("prod"))


@pytest.fixture
def baseline(tmp_path) -> Path:
    """The last deployment as `pulumi stack export` writes it, with its manifest's time."""
    state = export_state(_committed_run())
    state["deployment"]["manifest"] = {"time": DEPLOYED, "magic": "x", "version": "v3.140.0"}
    path = tmp_path / "prod-state.json"
    path.write_text(json.dumps(state))
    return path


@pytest.fixture
def links_elsewhere(monkeypatch, tmp_path):
    """shortlinks.csv with its loomio links pointed elsewhere, as retiring loomio asks."""
    from render import shortlinks

    text = re.sub(r"https://loomio\.hypha\.coop/[^\n]*", "https://hypha.coop/decisions", shortlinks.read(shortlinks.CSV_PATH))
    path = tmp_path / "shortlinks.csv"
    path.write_text(text)
    monkeypatch.setattr(shortlinks, "CSV_PATH", path)


@functools.lru_cache(maxsize=None)
def _without(host: str, retired_on: str = "2026-11-29"):
    """prod config with `host`'s services retired and the host itself removed, and its run (once
    per case: the program's run is the slow part, and evaluating a run leaves it as it was)."""
    raw = copy.deepcopy(read_stack_config("prod"))
    for svc in raw["services"].values():
        if svc["host"] == host:
            svc["retired"] = {"date": retired_on, "redirect": "https://hypha.coop/decisions"}
    del raw["hosts"][host]
    raw["backup"].get("storage_quotas", {}).pop(host, None)
    return raw, run_stack("prod", raw=raw)


def _messages(raw, run, policy, baseline, final=None, allow=None, env=None):
    config = copy.deepcopy(load_policy_config("prod"))
    if final is not None:
        config[REMOVAL] = {"finalBackups": final}
    env = {BASELINE_ENV: str(baseline), ALLOW_REPLACE_ENV: allow, FINAL_BACKUP_ENV: None, **(env or {})}
    return [v.message for v in evaluate(run, raw, config=config, env=env).verdict(policy).violations]


def test_removing_a_data_host_without_allow_or_final_backup_is_refused_twice(baseline, links_elsewhere):
    raw, run = _without("loomio")
    assert _messages(raw, run, REPLACEMENT, baseline) == [
        "prod VM loomio: its resource is gone (deleted, or renamed: a new URN is a new VM); "
        "if that is intended, run with HYPHA_ALLOW_REPLACE=loomio"
    ]
    (message,) = _messages(raw, run, REMOVAL, baseline)
    assert message.startswith("prod VM loomio holds data and would be removed: no final backup is named;")
    assert "finalBackups.loomio" in message and "HYPHA_ALLOW_REPLACE=loomio" in message


def test_the_allow_alone_is_not_enough_without_a_final_backup(baseline, links_elsewhere):
    raw, run = _without("loomio")
    assert _messages(raw, run, REPLACEMENT, baseline, allow="loomio") == []
    assert len(_messages(raw, run, REMOVAL, baseline, allow="loomio")) == 1


def test_the_allow_and_a_final_backup_after_the_last_deployment_pass(baseline, links_elsewhere):
    raw, run = _without("loomio")
    final = {"loomio": "loomio-2026-11-30T14:05:09"}
    assert _messages(raw, run, REPLACEMENT, baseline, final=final, allow="loomio") == []
    assert _messages(raw, run, REMOVAL, baseline, final=final, allow="loomio") == []
    # The same, given on the command line.
    env = {FINAL_BACKUP_ENV: "loomio=loomio-2026-11-30T14:05:09"}
    assert _messages(raw, run, REMOVAL, baseline, allow="loomio", env=env) == []


@pytest.mark.parametrize(
    "archive, words",
    [
        ("loomio-2026-11-30T11:59:59", "older than the last deployment (2026-11-30 12:00:00 UTC)"),
        ("lists-2026-11-30T14:05:09", "is not an archive of loomio"),
        ("loomio", "is not an archive of loomio"),
        ("loomio-2026-11-31T14:05:09", "does not carry a real time"),
        ("loomio-2099-01-01T00:00:00", "dated in the future"),
    ],
)
def test_a_final_backup_that_is_not_this_hosts_or_not_newer_than_the_change_is_refused(baseline, links_elsewhere, archive, words):
    raw, run = _without("loomio")
    (message,) = _messages(raw, run, REMOVAL, baseline, final={"loomio": archive}, allow="loomio")
    assert words in message, message


def test_a_final_backup_from_before_the_retirement_is_refused(tmp_path, baseline, links_elsewhere):
    # A baseline older than the retirement (the retirement and the removal in one change).
    state = json.loads(baseline.read_text())
    state["deployment"]["manifest"]["time"] = "2026-11-01T00:00:00Z"
    baseline.write_text(json.dumps(state))
    raw, run = _without("loomio", retired_on="2026-11-20")
    (message,) = _messages(raw, run, REMOVAL, baseline, final={"loomio": "loomio-2026-11-19T01:15:00"}, allow="loomio")
    assert "before its services were retired (2026-11-20)" in message


def test_a_baseline_without_a_deployment_time_cannot_vouch_for_the_backup(tmp_path, links_elsewhere):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(export_state(_committed_run())))
    raw, run = _without("loomio")
    (message,) = _messages(raw, run, REMOVAL, path, final={"loomio": "loomio-2026-11-30T14:05:09"}, allow="loomio")
    assert "deployment.manifest.time" in message


def test_removing_a_host_without_data_needs_no_final_backup(baseline):
    # web1 holds no data: it is the proxy (the stack would not validate without one, so only its VM goes).
    raw = read_stack_config("prod")
    run = copy.deepcopy(_committed_run())
    run.resources[:] = [r for r in run.resources if not (r.type.endswith("VmLegacy") and r.parent_name == "web1")]
    assert _messages(raw, run, REMOVAL, baseline) == []
    assert len(_messages(raw, run, REPLACEMENT, baseline)) == 1


def test_an_unchanged_stack_passes_and_without_a_baseline_the_rule_cannot_judge(baseline, monkeypatch):
    raw = read_stack_config("prod")
    assert _messages(raw, _committed_run(), REMOVAL, baseline) == []
    monkeypatch.delenv(BASELINE_ENV, raising=False)
    verdict = evaluate(_committed_run(), raw, env={BASELINE_ENV: None}).verdict(REMOVAL)
    assert verdict.violations == [] and "no baseline" in verdict.not_applicable


def test_every_other_policy_passes_a_stack_with_a_retired_service_and_its_host_removed(baseline, links_elsewhere):
    # public-services-dns-tls among them: the retired names still have records and a certificate.
    raw, run = _without("loomio")
    final = {"loomio": "loomio-2026-11-30T14:05:09"}
    config = copy.deepcopy(load_policy_config("prod"))
    config[REMOVAL] = {"finalBackups": final}
    report = evaluate(run, raw, config=config, env={BASELINE_ENV: str(baseline), ALLOW_REPLACE_ENV: "loomio"})
    failing = {v.policy: [x.message for x in v.violations] for v in report.verdicts if v.violations}
    assert failing == {}


def test_a_removed_hosts_repository_stays_readable_on_the_target(links_elsewhere):
    """Its passphrase is the same generated secret and stays on the target; nothing writes to the
    repository any more: its client key is gone from the target, and the drill no longer expects it."""
    from policy.view import script_files
    from render.roles import backup as rb

    raw, run = _without("loomio")
    before = {r.name for r in _committed_run().resources if r.type == "random:index/randomPassword:RandomPassword"}
    after = {r.name for r in run.resources if r.type == "random:index/randomPassword:RandomPassword"}
    assert "borg-passphrase-loomio" in before and after == before
    target = next(r for r in run.resources if r.type == "command:remote:Command" and r.name == "backup1-converge")
    stdin = target.inputs["stdin"]
    files = script_files(stdin["value"] if isinstance(stdin, dict) else stdin)
    assert f"{rb.PASSPHRASE_DIR}/loomio" in files
    assert "loomio" not in files[rb.AUTHORIZED_KEYS].content
    assert "loomio" not in json.loads(files[rb.TARGET_CONFIG].content)["repositories"]


def test_dropping_the_retired_entrys_data_lets_the_repository_go(links_elsewhere):
    from model import derive_backup as backup
    from model.load import build_stack

    raw = copy.deepcopy(_without("loomio")[0])
    assert backup.kept(build_stack(raw, "prod")) == ["loomio"]
    raw["services"]["loomio"].pop("data_paths")
    raw["services"]["loomio"].pop("databases")
    assert backup.kept(build_stack(raw, "prod")) == []
