"""render/wire.py: the converge script's stage calls, late placeholders and checker table, written once and read once."""

from __future__ import annotations

import importlib
import re
import subprocess

import pytest

from render import wire
from render.converge import converge_script, fill, late_names
from render.plan import ManagedFile, late
from render.roles import host_plan
from tests.program_runs import STACKS, model
from tests.test_converge_render import CHECKERS as MACHINE_CHECKERS

pytestmark = pytest.mark.files

# Checkers the file tier runs elsewhere, on the files that use them, with the real tool.
TESTED_ELSEWHERE = {
    "sshd": "tests.test_rendered_files:test_sshd_dropin_passes_sshd_t",
    "nginx": "tests.test_proxy_render:test_the_proxy_config_passes_nginx_t",
    "wireguard": "tests.test_converge_render:test_wireguard_config_parses_and_has_a_peer_per_login_with_a_key",
    "borgmatic": "tests.test_backup_render:test_every_rendered_borgmatic_config_passes_debians_validator",
    "ssh_private_key": "tests.test_backup_render:test_the_converge_checks_borgmatic_configs_and_private_keys_with_the_real_tools",
    "python": "tests.test_backup_render:test_the_converge_checks_borgmatic_configs_and_private_keys_with_the_real_tools",
    "json": "tests.test_proxy_render:test_the_proxy_config_passes_nginx_t",
    "promtool-config": "tests.test_monitoring_render:test_prometheus_config_passes_promtool_check_config_with_its_rules",
    "promtool-rules": "tests.test_monitoring_render:test_alert_rules_pass_promtool_check_rules",
    "promtool-web": "tests.test_monitoring_render:test_the_converge_checks_every_monitoring_config_with_its_daemons_checker",
    "amtool": "tests.test_monitoring_render:test_alertmanager_config_passes_amtool_check_config",
    "blackbox": "tests.test_monitoring_render:test_blackbox_config_passes_the_exporters_own_check",
    "mtail": "tests.test_access_metrics:test_the_converge_check_passes_the_program_and_refuses_a_broken_one",
    "postfix": "tests.test_mail_files:test_postfix_config_passes_postconf_with_no_warning",
    "opendkim": "tests.test_mail_files:test_opendkim_config_passes_opendkims_own_test",
    "private_key": "tests.test_mail_files:test_the_key_checker_accepts_the_key_and_refuses_garbage",
}


def _fields(f) -> tuple:
    return (f.path, f.mode, f.owner, f.group, f.unit, f.action, f.check)


@pytest.mark.parametrize("stack", STACKS)
def test_what_every_hosts_script_carries_parses_back_to_exactly_its_plans_files(stack):
    m = model(stack)
    for host in sorted(m.hosts):
        plan = host_plan(m, host)
        stages = wire.parse_stages(converge_script(m, host, plan))
        assert [s.index for s in stages] == list(range(1, len(plan.files) + 1)), host
        assert [(*_fields(s), s.content()) for s in stages] == [(*_fields(f), f.content) for f in plan.files], host
        assert any(f.late for f in plan.files) and any(f.unit is None for f in plan.files)


def test_a_filled_script_parses_back_to_the_files_with_the_values_in():
    m = model("staging")
    plan = host_plan(m, "gateway")
    plan.files.append(ManagedFile("/etc/odd 'name'", f"a{late('borg/x')}b\n{late('borg/y')}", mode="0600",
                                  owner="nobody", group="nogroup", unit="ssh", action="restart", check="shell"))
    script = converge_script(m, "gateway", plan)
    values = {n: f"value of {n}\nwith 'quotes' and $x" for n in late_names(script)}
    (odd,) = [s for s in wire.parse_stages(fill(script, values)) if s.path == "/etc/odd 'name'"]
    assert odd.content() == f"a{values['borg/x']}b\n{values['borg/y']}"
    assert (odd.mode, odd.owner, odd.group, odd.unit, odd.action, odd.check) == ("0600", "nobody", "nogroup", "ssh", "restart", "shell")
    # Unfilled, the placeholders stay names: the policy pack reads them as empty text.
    (raw,) = [s for s in wire.parse_stages(script) if s.path == odd.path]
    assert raw.content(lambda name: f"<{name}>") == "a<borg/x>b\n<borg/y>"


def test_a_misspelt_checker_fails_at_render_time_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"/etc/sudoers.d/x: unknown checker 'sudoer'; .*sudoers"):
        ManagedFile("/etc/sudoers.d/x", "alice ALL=(ALL) ALL\n", check="sudoer")
    assert ManagedFile("/etc/sudoers.d/x", "", check="sudoers").check == "sudoers"


def test_the_converge_check_function_has_one_arm_per_checker_in_the_table_and_no_other():
    script = converge_script(model("prod"), "bw1")
    body = script[script.index("check() {"):]
    body = body[: body.index("\n}\n")]
    arms = re.findall(r"^\t([^\s()]+)\)", body, re.M)
    assert arms == ["-", *wire.CHECKERS, "*"]


def _check_function(script: str) -> str:
    fn = script[script.index("check() {"):]
    return fn[: fn.index("\n}\n") + 3]


@pytest.mark.parametrize("checker,good,bad", [
    ("sudoers", "alice ALL=(ALL) ALL\n", "alice ALL=(ALL NOPASSWD ALL\n"),
    ("known_hosts", "10.0.1.17 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n", ""),
    ("named-checkzone",
     "$ORIGIN hypha.coop.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 203.0.113.5\n",
     "$ORIGIN hypha.coop.\n$TTL 300\n@ IN A 203.0.113.999\n"),
])
def test_the_check_function_rendered_from_the_table_passes_a_good_file_and_refuses_a_broken_one(tmp_path, checker, good, bad):
    fn = _check_function(converge_script(model("prod"), "bw1"))
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for text, ok in ((good, True), (bad, False)):
        staged = tmp_path / "staged"
        staged.write_text(text)
        run = subprocess.run(["sh", "-c", f'PATH={path}\nfail() {{ exit 9; }}\n{fn}check "$1" "$2"', "sh", checker, str(staged)],
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode == 0) == ok, f"{checker} {'refused' if ok else 'passed'} {text!r}: {run.stderr}"


def test_an_unknown_checker_on_the_host_fails_the_converge():
    fn = _check_function(converge_script(model("prod"), "bw1"))
    run = subprocess.run(["sh", "-c", f'fail() {{ echo "$*"; exit 9; }}\n{fn}check sudoer /dev/null'], capture_output=True, text=True)
    assert run.returncode == 9 and "unknown checker sudoer" in run.stdout


def test_every_checker_in_the_table_is_run_on_this_machine_by_a_test():
    """A checker added to the table without a test-machine equivalent fails here."""
    assert set(wire.CHECKERS) == set(MACHINE_CHECKERS) | set(TESTED_ELSEWHERE)
    assert not set(MACHINE_CHECKERS) & set(TESTED_ELSEWHERE)
    for name, where in TESTED_ELSEWHERE.items():
        module, test = where.split(":")
        assert callable(getattr(importlib.import_module(module), test, None)), f"{name}: {where} is gone"


def test_the_machine_checkers_run_the_tables_command_where_it_has_one():
    for name, command in MACHINE_CHECKERS.items():
        c = wire.CHECKERS[name]
        if c.argv and name != "nftables":  # nft runs inside a namespace here (see _nft_check)
            argv = command("/tmp/staged")
            assert argv[0].endswith("/" + c.argv[0]) and argv[1:] == c.command("/tmp/staged")[1:], name


def test_the_late_marks_have_one_definition():
    from render import converge, plan, quote

    assert plan.LATE_MARK is wire.LATE_MARK and plan.late is wire.late and quote._LATE is wire.LATE_MARK
    assert converge.LATE_PLACEHOLDER is wire.LATE_PLACEHOLDER
    assert wire.LATE_MARK.findall(late("hostkey/gw/rsa-public")) == ["hostkey/gw/rsa-public"]
    assert wire.LATE_PLACEHOLDER.findall(wire.late_token("borg/x")) == ["borg/x"]
