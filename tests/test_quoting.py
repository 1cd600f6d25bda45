"""File tier: every value that lands in shell, a systemd unit, nginx or YAML goes through its format's writer
(render/quote.py), and each writer keeps a hostile value inert where the real reader reads it.

The lint walks every template's Jinja AST: in a shell-context or unit template, an expression that
is pasted into the output must end in an approved writer (filter), be a constant, or be on the
short allowlist of values typed as safe integers/names. A bad fixture shows the lint can fail.
"""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import jinja2
import pytest
from jinja2 import nodes

from render import quote
from render.templates import TEMPLATES, environment

pytestmark = pytest.mark.files

FIXTURES = Path(__file__).parent / "fixtures" / "quoting"

# Which templates are read by a shell, and which by systemd (unit files, drop-ins, unit-style confs).
SHELL_TEMPLATES = (
    "converge.sh.j2",
    "*.sh.j2",
    "reverse_proxy/certbot-deploy-hook.j2",
    # /etc/default files: sourced by init scripts (and checked with sh -n), read by systemd's EnvironmentFile=.
    "base/node-exporter.default.j2",
    "monitoring/default.j2",
)
SYSTEMD_TEMPLATES = (
    "*.service.j2",
    "*.timer.j2",
    "reverse_proxy/certbot-ca.conf.j2",
    "base/journald.conf.j2",
    "base/timesyncd.conf.j2",
)
NGINX_TEMPLATES = ("reverse_proxy/*.conf.j2",)
# Prometheus' rules file is PromQL inside YAML, its values constants and catalog host names: not linted.
YAML_TEMPLATES = ("*.yml.j2", "*.yaml.j2")
NOT_LINTED = ("monitoring/rules.yml.j2",)
APPROVED = {
    # b64/b64line: base64 text only ([A-Za-z0-9+/=]) inside a quoted heredoc.
    "sh": {"shquote", "shell_code", "comment", "b64", "b64line"},
    "systemd": {"systemd_arg", "systemd_value", "systemd_env", "comment"},
    "nginx": {"nginx_str", "comment"},
    # tojson: JSON is YAML; yaml_value: plain when YAML reads it back as the same string.
    "yaml": {"tojson", "yaml_value", "borgmatic_str", "borgmatic_word", "comment"},
}
# Values pasted bare because their type admits nothing but safe characters. Keep this short.
ALLOWED = {
    "converge.sh.j2": {
        "loop.index",  # an int
        "piece",  # a late value's name, asserted [a-z0-9][a-z0-9/_.-]* by render.plan.late()
    },
    "monitoring/pve-exporter.service.j2": {"port"},  # model.derive_monitoring.PVE_EXPORTER_PORT, an int constant
    # Written in Python by render/shortlinks.py with quote.nginx_quote; statuses and the count are ints.
    "reverse_proxy/shortlinks.conf.j2": {"entry", "host", "redirect_status", "unknown_status", "count", "source"},
    # Late values, already YAML scalars (render.roles.monitoring.yaml_scalar), or their placeholders;
    # the scrape jobs are yaml.dump output; probe_alerts is a constant regex of alert names.
    "monitoring/alertmanager.yml.j2": {"smtp_password", "smtp_password_file", "matrix_url", "probe_alerts"},
    "monitoring/pve.yml.j2": {"token"},
    "monitoring/web.yml.j2": {"users"},
    "monitoring/prometheus.yml.j2": {"jobs"},
    # Keys from render/roles/backup.py's own constants (model.derive_backup.DUMP_HOOKS, pg_dump_command).
    "backup_client/borgmatic.yaml.j2": {"kind", "key"},
}


def context_of(name: str) -> str | None:
    if name in NOT_LINTED:
        return None
    if any(fnmatch.fnmatch(name, p) for p in SHELL_TEMPLATES):
        return "sh"
    if any(fnmatch.fnmatch(name, p) for p in SYSTEMD_TEMPLATES):
        return "systemd"
    if any(fnmatch.fnmatch(name, p) for p in NGINX_TEMPLATES):
        return "nginx"
    if any(fnmatch.fnmatch(name, p) for p in YAML_TEMPLATES):
        return "yaml"
    return None


def _dotted(expr: nodes.Node) -> str | None:
    if isinstance(expr, nodes.Name):
        return expr.name
    if isinstance(expr, nodes.Getattr):
        base = _dotted(expr.node)
        return f"{base}.{expr.attr}" if base else None
    return None


def _written_by_writer(expr: nodes.Node, approved: set[str], allowed: set[str]) -> bool:
    if isinstance(expr, nodes.Const):
        return True
    if isinstance(expr, nodes.CondExpr):
        return all(_written_by_writer(e, approved, allowed) for e in (expr.expr1, expr.expr2) if e is not None)
    if _dotted(expr) in allowed:
        return True
    if isinstance(expr, nodes.Filter):
        if expr.name in approved:
            return True
        # `xs | map("writer") | join(" ")`: every item written, joined with constant text.
        if expr.name == "join" and isinstance(expr.node, nodes.Filter) and expr.node.name == "map":
            first = expr.node.args[0] if expr.node.args else None
            return isinstance(first, nodes.Const) and first.value in approved
    return False


def unquoted_expressions(source: str, context: str, allowed: set[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, expression source) of every pasted value not written by an approved writer."""
    env = environment()
    tree = env.parse(source)
    lines = source.splitlines()
    found = []
    for output in tree.find_all(nodes.Output):
        for expr in output.nodes:
            if isinstance(expr, nodes.TemplateData):
                continue
            if not _written_by_writer(expr, APPROVED[context], allowed):
                found.append((expr.lineno, lines[expr.lineno - 1].strip()))
    return found


def _templates():
    for path in sorted(TEMPLATES.rglob("*")):
        name = path.relative_to(TEMPLATES).as_posix()
        if path.is_file() and context_of(name):
            yield pytest.param(name, id=name)


def test_the_lint_covers_the_converge_script_hooks_units_nginx_and_yaml():
    names = {p.values[0]: context_of(p.values[0]) for p in _templates()}
    assert {"converge.sh.j2", "backup_target/prepare.sh.j2", "backup_client/backup-hook.sh.j2",
            "backup_client/hypha-backup.service.j2", "backup_target/job.timer.j2", "reverse_proxy/site.conf.j2",
            "base/user-data.yaml.j2", "backup_client/borgmatic.yaml.j2"} <= set(names)
    assert names["reverse_proxy/certbot-ca.conf.j2"] == "systemd"


@pytest.mark.parametrize("name", list(_templates()))
def test_every_value_in_a_shell_or_unit_template_goes_through_its_writer(name):
    source = (TEMPLATES / name).read_text()
    bad = unquoted_expressions(source, context_of(name), ALLOWED.get(name, set()))
    assert not bad, f"{name}: values pasted without the {context_of(name)} writer: {bad}"


def test_a_template_that_pastes_a_value_into_shell_unquoted_fails_the_lint():
    bad = unquoted_expressions((FIXTURES / "unquoted.sh.j2").read_text(), "sh")
    assert [line for line, _ in bad] == [4, 5, 6]  # the bare path, the bare join, the value inside "..."


def test_a_unit_with_a_bare_value_or_shell_quoting_fails_the_lint():
    # Shell quoting is not systemd quoting: `shquote` in ExecStart= leaves `%` and `$` live.
    bad = unquoted_expressions((FIXTURES / "unquoted.service.j2").read_text(), "systemd")
    assert [line for line, _ in bad] == [2, 2]


def test_shell_code_takes_only_steps_built_with_the_shell_writer():
    with pytest.raises(TypeError, match="render.quote.Shell"):
        environment().from_string("{{ step | shell_code }}").render(step="certbot --email x;touch /tmp/x")
    assert environment().from_string("{{ step | shell_code }}").render(step=quote.sh_join(["echo", "a;b"])) == "echo 'a;b'"


HOSTILE = [
    "plain",
    "a b",
    "$(touch {canary})",
    "`touch {canary}`",
    ";touch {canary};",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "${IFS}touch${IFS}{canary}",
    "x\ntouch {canary}\n",
    "x\r\ntouch {canary}",
    "%n %% %h\\",
    "-rf",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_shell_word_means_exactly_its_value_and_runs_nothing(tmp_path, value):
    canary = tmp_path / "CANARY"
    value = value.replace("{canary}", str(canary))
    out = subprocess.run(["sh", "-c", f"printf '%s' {quote.sh(value)}"], capture_output=True, timeout=10)
    assert out.returncode == 0 and out.stdout == value.encode()
    assert not canary.exists()


def test_plain_words_keep_their_bytes():
    for word in ("/srv/borg/bw1", "hypha-backup.timer", "alice", "--config.file=/etc/prometheus/prometheus.yml"):
        assert quote.sh(word) == word
        assert quote.systemd_arg(word) == word
        assert quote.nginx_str(word) == word
    assert quote.yaml_value("30s") == "30s" and quote.yaml_value("yes") == '"yes"' and quote.yaml_value("a: b") == '"a: b"'


def _verify_unit(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    unit = tmp_path / "hypha-quote-test.service"
    unit.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_a_hostile_execstart_argument_stays_one_argument_that_systemd_accepts(tmp_path, value):
    value = value.replace("{canary}", str(tmp_path / "CANARY"))
    text = (
        "[Unit]\nDescription=quote test\n[Service]\nType=oneshot\n"
        f"ExecStart=/bin/true {quote.systemd_arg(value)}\n"
        f"Environment={quote.systemd_env(value, 'HYPHA_TEST')}\n"
    )
    # One line per setting: nothing the value holds starts a setting of its own.
    assert [line.split("=", 1)[0] for line in text.splitlines()[2:]] == ["[Service]", "Type", "ExecStart", "Environment"]
    assert "%" not in text.replace("%%", "")
    result = _verify_unit(tmp_path, text)
    assert result.returncode == 0, result.stderr


def test_systemd_verify_would_catch_a_broken_argument(tmp_path):
    result = _verify_unit(tmp_path, '[Service]\nType=oneshot\nExecStart=/bin/true "unterminated\n')
    assert result.returncode != 0


def test_one_line_settings_refuse_what_would_start_a_new_line():
    for value in ("*-*-* 01:15\nExecStart=/bin/sh", "x\\", "a\x00b"):
        with pytest.raises(quote.QuoteError):
            quote.systemd_value(value)
    assert quote.systemd_value("100% of *-*-* 01:15") == "100%% of *-*-* 01:15"


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMXHOdLXG4lpjWMxIUrV+0ySWuv+gXfXiMd7LNq7PR6J alice"


def test_an_authorized_keys_command_with_quotes_stays_one_option(tmp_path):
    command = quote.sh_join(["borg", "serve", "--restrict-to-repository", '/srv/borg";touch /tmp/x;"'])
    line = quote.authorized_keys_line(KEY, [quote.authorized_keys_option("from", "10.0.1.5"),
                                            quote.authorized_keys_option("command", command), "restrict"])
    path = tmp_path / "keys"
    path.write_text(line + "\n")
    assert subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, timeout=30).returncode == 0
    assert line.count("\n") == 0 and line.endswith(KEY)
    for bad in ("a\nssh-ed25519 AAAA", "ends in \\"):
        with pytest.raises(quote.QuoteError):
            quote.authorized_keys_option("command", bad)


@pytest.mark.parametrize("host", ["borg.example.net\n* ssh-ed25519 AAAA", "*", "a,b", "!x", "@cert-authority", "a b", "|1|x"])
def test_a_known_hosts_line_pins_exactly_one_plain_host(host):
    with pytest.raises(quote.QuoteError):
        quote.known_hosts_line(host, 22, KEY)


def test_known_hosts_lines_for_a_name_and_a_port(tmp_path):
    assert quote.known_hosts_line("borg.example.net", 22, KEY) == f"borg.example.net {KEY}"
    assert quote.known_hosts_line("2001:db8::5", 2222, KEY) == f"[2001:db8::5]:2222 {KEY}"
    path = tmp_path / "known_hosts"
    path.write_text(quote.known_hosts_line("borg.example.net", 23, KEY) + "\n")
    assert subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, timeout=30).returncode == 0


@pytest.mark.parametrize("name", ["*", "alice bob", "!root", "a@10.0.0.1", "a#b", "a\nMatch all", ""])
def test_an_sshd_user_list_takes_plain_names_only(name):
    with pytest.raises(quote.QuoteError):
        quote.sshd_name(name)


def test_nginx_strings_are_quoted_or_refused():
    assert quote.nginx_str("a b;}") == '"a b;}"'
    assert quote.nginx_str('x"\\') == '"x\\"\\\\"'
    assert quote.nginx_str("~regex") == '"~regex"'
    for bad in ("$host", "a\nb"):
        with pytest.raises(quote.QuoteError):
            quote.nginx_str(bad)


@pytest.mark.parametrize("value", ["/srv/${IFS}x", "/srv/\\${HOME}", "${A:-b}${C-d}", "/srv/$(touch x)", "plain"])
def test_borgmatic_reads_a_string_back_as_itself_not_as_an_environment_variable(value):
    """borgmatic's own resolver (Debian's borgmatic 1.7, run by the system python3) on the written scalar."""
    code = (
        "import sys, yaml; from borgmatic.config.environment import resolve_env_variables as r; "
        "sys.stdout.write(r(yaml.safe_load(sys.stdin.read())))"
    )
    out = subprocess.run(["/usr/bin/python3", "-c", code], input=quote.borgmatic_str(value), capture_output=True,
                         text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOME": "/root"})
    assert out.returncode == 0 and out.stdout == value, out.stderr


def test_a_database_name_borgmatic_would_paste_into_its_shell_is_refused():
    assert quote.borgmatic_word("loomio_production") == '"loomio_production"'
    with pytest.raises(quote.QuoteError):
        quote.borgmatic_word("db;touch x")
