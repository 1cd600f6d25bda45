"""Monitoring, program tier: what the monitoring host is told to watch follows from the catalog (every
host, service, name server and backup client), every alert says what and what to do, the members' view
(VPN or proxy with a login) and the secrets come from config, and bad config is refused with its key
path (the file tier, every rendered file under promtool, amtool, blackbox_exporter and systemd, and
Alertmanager's routing on a real one, is tests/test_monitoring_render.py)."""

from __future__ import annotations

import re

import pytest
import yaml

from ops.mockrun import OFFLINE_SECRETS, run_stack
from render import inventory, metrics
from render.roles import monitoring as mr
from render.converge import converge_script, late_names
from render.roles import host_plan
from model import derive
from model.errors import ConfigError
from model.monitoring import ALERTS
from model.load import PROJECT, build_stack
from model.derive_monitoring import ALERTMANAGER_PORT, PROMETHEUS_PORT, monitoring_host
from tests.program_runs import FW_RULES, STACKS, child, model, raw, run
from tests.test_monitoring_render import _rules, _targets, monitoring_files

pytestmark = pytest.mark.program


def _rules_of(r, host: str) -> list[dict]:
    return child(r, host, FW_RULES).inputs["rules"]


def _problems(cfg: dict, stack: str = "prod") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_stack(cfg, stack)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("stack", STACKS)
def test_every_host_s_node_exporter_is_scraped_with_its_host_role_and_stack(stack):
    m = model(stack)
    node = _targets(m)["node"]
    assert sorted(t["target"] for t in node) == sorted(f"{h.lan_ip}:9100" for h in m.hosts.values())
    for t in node:
        h = m.hosts[t["host"]]
        assert t["target"] == f"{h.lan_ip}:9100"
        assert t["role"] == ",".join(sorted(h.roles)) and t["stack"] == stack


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_alertmanager_and_the_blackbox_exporter_watch_each_other(stack):
    m = model(stack)
    lan = m.hosts[monitoring_host(m)].lan_ip
    jobs = _targets(m)
    assert [t["target"] for t in jobs["prometheus"]] == [f"{lan}:{PROMETHEUS_PORT}"]
    assert [t["target"] for t in jobs["alertmanager"]] == [f"{lan}:{ALERTMANAGER_PORT}"]
    assert [t["target"] for t in jobs["blackbox"]] == ["127.0.0.1:9115"]
    config = yaml.safe_load(monitoring_files(m)[mr.PROMETHEUS_CONFIG])
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [f"{lan}:{ALERTMANAGER_PORT}"]


def test_a_host_and_a_service_added_to_the_catalog_are_watched_without_editing_a_target_list():
    cfg = raw("staging")
    cfg["hosts"]["wiki"] = {"vm_id": 8010, "node": "kvm1", "lan_ip": "10.0.2.20", "roles": ["app"]}
    cfg["services"]["wiki"] = {"host": "wiki", "domains": ["wiki.staging.hypha.coop"], "port": 3001, "public": True, "health_path": "/health"}
    jobs = _targets(build_stack(cfg, "staging"))
    assert {"target": "10.0.2.20:9100", "host": "wiki", "role": "app", "stack": "staging"} in jobs["node"]
    probe = next(t for t in jobs["probe_http"] if t["service"] == "wiki")
    assert probe["target"] == "https://10.0.2.11/health" and probe["url"] == "https://wiki.staging.hypha.coop/health"
    assert probe["host"] == "wiki" and probe["proxy"] == "web1"


def test_a_service_listed_as_www_first_is_probed_at_the_name_the_proxy_serves_not_its_redirect():
    cfg = raw("prod")
    cfg["services"]["www"]["domains"] = ["www.hypha.coop", "hypha.coop"]
    probe = next(t for t in _targets(build_stack(cfg, "prod"))["probe_http"] if t["service"] == "www")
    assert probe["url"] == "https://hypha.coop/"


def test_staging_probes_do_not_fail_on_acme_staging_certificates_but_still_read_their_expiry():
    blackbox = yaml.safe_load(monitoring_files(model("staging"))[mr.BLACKBOX_CONFIG])["modules"]
    assert blackbox["https_loomio"]["http"]["tls_config"]["insecure_skip_verify"] is True


def test_internal_services_are_probed_at_their_own_port():
    m = model("staging")
    probe = next(t for t in _targets(m)["probe_http"] if t["service"] == "prometheus")
    assert probe["target"] == f"http://{m.hosts['monitor1'].lan_ip}:9090/-/healthy" and probe["module"] == "http_2xx"


@pytest.mark.parametrize("stack", STACKS)
def test_the_zone_is_probed_on_each_name_server(stack):
    m = model(stack)
    dns = _targets(m)["probe_dns"]
    assert [t["target"] for t in dns] == [f"{m.hosts[h].lan_ip}:53" for h in derive.hosts_with_role(m, "dns")]
    module = yaml.safe_load(monitoring_files(m)[mr.BLACKBOX_CONFIG])["modules"]["dns_soa"]["dns"]
    assert module["query_name"] == m.site.domain and module["query_type"] == "SOA"
    cfg = raw(stack)
    del cfg["dns"]
    assert "probe_dns" not in _targets(build_stack(cfg, stack))


def test_node_exporter_runs_the_systemd_and_textfile_collectors_the_alerts_need():
    m = model("prod")
    for host in m.hosts:
        args = next(f for f in host_plan(m, host).files if f.path == "/etc/default/prometheus-node-exporter").content
        assert "--collector.systemd" in args and f"--collector.textfile.directory={metrics.TEXTFILE_DIR}" in args


def test_every_issue_alert_exists_and_waits_says_what_and_what_to_do():
    rules = _rules()
    assert [r["alert"] for r in rules] == [
        "InstanceDown", "CpuSaturated", "MemoryPressure", "DiskSpaceLow", "InodesLow", "DiskWritesSustained",
        "SystemdUnitFailed", "BackupTooOld", "RestoreDrillTooOld", "RestoreDrillFailed", "BackupNeverReported",
        "RestoreDrillNeverReported", "ProbeFailing", "CertificateExpiringSoon",
        "BackupRepositoryTampered", "BackupTargetJobFailed", "BackupSpaceRunningOut", "BackupRepositoryNearQuota",
        "DmarcFailures", "MailQueueGrowing", "MailDeliveriesDeferred",  # render/roles/mail.py's group
    ]
    for r in rules:
        assert re.fullmatch(r"[0-9]+[smh]", r["for"]), r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert set(r["annotations"]) == {"summary", "runbook"} and all(r["annotations"].values()), r["alert"]


def test_the_model_names_every_alert_of_the_rules_for_alert_waits():
    assert [r["alert"] for r in _rules()] == list(ALERTS)


def test_alert_waits_set_the_wait_of_each_named_alert_and_no_other():
    cfg = raw("prod")
    waits = {name: f"{i + 1}s" for i, name in enumerate(ALERTS) if i % 2 == 0}
    cfg["monitoring"]["alert_waits"] = waits
    before = {r["alert"]: r for r in _rules()}
    after = {r["alert"]: r for g in yaml.safe_load(mr.rules(build_stack(cfg, "prod")))["groups"] for r in g["rules"]}
    assert list(after) == list(before)
    for name, rule in after.items():
        assert rule["for"] == waits.get(name, before[name]["for"]), name
        summary = before[name]["annotations"]["summary"]
        if name in waits:  # a summary that says how long says the new wait (InstanceDown's "for 3 minutes")
            summary = summary.replace(f"for {mr.spoken(before[name]['for'])}", f"for {mr.spoken(waits[name])}")
        assert rule["annotations"]["summary"] == summary, name
        assert {k: v for k, v in rule.items() if k not in ("for", "annotations")} == {
            k: v for k, v in before[name].items() if k not in ("for", "annotations")}, name
        assert rule["annotations"]["runbook"] == before[name]["annotations"]["runbook"], name


def test_no_summary_tells_a_wait_other_than_its_rules():
    """Where a summary says how long (`for 3 minutes`), it says the rule's wait, as set or not."""
    cfg = raw("prod")
    cfg["monitoring"]["alert_waits"] = {name: "7m" for name in ALERTS}
    changed = {r["alert"]: r for g in yaml.safe_load(mr.rules(build_stack(cfg, "prod")))["groups"] for r in g["rules"]}
    told = 0
    for rule in _rules():
        if f"for {mr.spoken(rule['for'])}" in rule["annotations"]["summary"]:
            told += 1
            assert "for 7 minutes" in changed[rule["alert"]]["annotations"]["summary"], rule["alert"]
            assert f"for {mr.spoken(rule['for'])}" not in changed[rule["alert"]]["annotations"]["summary"], rule["alert"]
    assert told >= 5  # InstanceDown, CpuSaturated, DiskWritesSustained, ProbeFailing, the never-reported pair
    assert mr.spoken("1h30m") == "1 hour 30 minutes" and mr.spoken("1d") == "1 day" and mr.spoken("36h") == "36 hours"


def test_backup_alerts_read_the_metrics_the_backup_role_writes():
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    assert metrics.BACKUP_LAST_SUCCESS in exprs["BackupTooOld"] and f"> {26 * 3600}" in exprs["BackupTooOld"]
    assert metrics.DRILL_LAST_SUCCESS in exprs["RestoreDrillTooOld"] and f"> {26 * 3600}" in exprs["RestoreDrillTooOld"]
    assert f"< {14 * 86400}" in exprs["CertificateExpiringSoon"]
    assert metrics.DRILL_OK in exprs["RestoreDrillFailed"]
    assert metrics.REPOSITORY_TAMPERED in exprs["BackupRepositoryTampered"]
    assert metrics.TARGET_JOB_OK in exprs["BackupTargetJobFailed"]
    assert f"{metrics.REPOSITORY_SIZE} / {metrics.REPOSITORY_QUOTA}" in exprs["BackupRepositoryNearQuota"]


def test_every_backup_client_in_the_catalog_must_report_even_before_its_first_backup():
    """A new data host whose backups never ran has no timestamp to age: the catalog says it must report."""
    from model import derive_backup as backup

    stack = model("prod")
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    for alert in ("BackupNeverReported", "RestoreDrillNeverReported"):
        hosts = re.search(r'host=~"([^"]+)"', exprs[alert]).group(1).split("|")
        assert hosts == backup.clients(stack) and "dns" not in hosts, alert


def test_ui_vpn_opens_both_uis_to_the_gateway_which_is_where_vpn_members_arrive():
    m = model("staging")
    gw = f"{m.hosts[derive.gateway_name(m)].lan_ip}/32"
    rules = derive.inbound_rules(m, "monitor1")
    assert {(r.port, r.source) for r in rules if r.port == ALERTMANAGER_PORT} == {(ALERTMANAGER_PORT, gw)}
    assert (PROMETHEUS_PORT, gw) in {(r.port, r.source) for r in rules}
    # The same rules on the Proxmox firewall, and the gateway forwards VPN traffic to the LAN, masqueraded.
    assert {"dport": "9093", "source": gw}.items() <= next(x for x in _rules_of(run("staging"), "monitor1") if x["dport"] == "9093").items()
    gateway_nft = next(f for f in host_plan(m, derive.gateway_name(m)).files if f.path == "/etc/nftables.conf").content
    assert f"ip saddr {m.network.vpn.cidr} ip daddr {m.network.lan_cidr} masquerade" in gateway_nft
    files = monitoring_files(m)
    assert mr.WEB_CONFIG not in files and "--web.config.file" not in files["/etc/default/prometheus"]
    assert f"--web.external-url=http://{m.hosts['monitor1'].lan_ip}:9090/" in files["/etc/default/prometheus"]
    # Alertmanager's LAN port is its guard's (a login, and rights per login); Alertmanager on loopback.
    assert f"--web.listen-address=127.0.0.1:9093" in files["/etc/default/prometheus-alertmanager"]
    guard = next(f for f in host_plan(m, "monitor1").files if f.path == mr.GUARD_SITE).content
    assert f"listen {m.hosts['monitor1'].lan_ip}:9093;" in guard


def test_ui_proxy_without_the_ui_services_is_refused_naming_the_fix():
    cfg = raw("prod")
    del cfg["services"]["alertmanager"]
    (problem,) = _problems(cfg)
    assert problem.startswith("monitoring.ui: is `proxy` but no public service publishes the alertmanager UI")
    assert "services.alertmanager {host: monitor1, port: 9093, public: true" in problem and "or set ui: vpn" in problem


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: (c["monitoring"].pop("email"), c["monitoring"].pop("matrix")), "monitoring: has no receiver"),
        (lambda c: c["monitoring"].update(matrix={"url": "https://matrix.example.org/hook", "url_secret": True}), "monitoring.matrix: needs exactly one of"),
        (lambda c: c["hosts"]["monitor1"].update(roles=["app"]), "monitoring: is set but no host has role `monitoring`"),
        (lambda c: c["hosts"]["bw1"]["roles"].append("monitoring"), "hosts: 2 hosts have role `monitoring`"),
        (lambda c: c["monitoring"].update(scrape_interval="30 seconds"), "monitoring.scrape_interval: '30 seconds' is not a duration"),
        (lambda c: c["monitoring"]["email"].update(to=["infra"]), "monitoring.email.to[0]: 'infra' is not an email address"),
        (lambda c: c["monitoring"].update(ui="public"), "monitoring.ui: 'public'"),
    ],
)
def test_bad_monitoring_config_is_refused_with_its_key_path_and_fix(change, expected):
    cfg = raw("prod")
    change(cfg)
    assert any(p.startswith(expected) for p in _problems(cfg)), _problems(cfg)


def test_the_monitoring_host_gets_its_secrets_only_as_late_values():
    guard = [mr.LATE_ALERTMANAGER_USERS, mr.LATE_GUARD_USERS, mr.LATE_INTERNAL_AUTH]
    assert [n for n in late_names(converge_script(model("prod"), "monitor1")) if n.startswith("monitoring/")] == sorted([
        mr.LATE_MATRIX_URL, mr.LATE_PVE_TOKEN, mr.LATE_SCRAPE_PASSWORD, mr.LATE_SMTP_PASSWORD, mr.LATE_WEB_USERS, *guard,
        inventory.LATE_OFFSITE_KEY,
    ])
    # Staging's Alertmanager is behind the guard too: logins, so the UI hashes, even with `ui: vpn`.
    assert [n for n in late_names(converge_script(model("staging"), "monitor1")) if n.startswith("monitoring/")] == sorted(
        [mr.LATE_MATRIX_URL, mr.LATE_SCRAPE_PASSWORD, *guard, inventory.LATE_OFFSITE_KEY]
    )
    r = run("prod")
    (cmd,) = [c for c in r.of_type("command:remote:Command") if c.name == "monitor1-converge"]
    assert "stdin" in cmd.secret_inputs


def test_a_stack_asks_only_for_the_monitoring_secrets_its_config_uses():
    unused = {f"{PROJECT}:{k}" for k in ("pveExporterToken", "alertSmtpPassword")}
    secrets = {k: v for k, v in OFFLINE_SECRETS.items() if k not in unused}
    run_stack("staging", secrets=secrets)  # no pve token or SMTP password: staging uses neither
    with pytest.raises(Exception, match="pveExporterToken"):
        run_stack("prod", secrets=secrets)


def test_the_stack_name_reaches_the_monitoring_files_only_as_the_stack_label():
    """No branching on the stack's name: prod's config as another stack differs only in the `stack` label."""
    cfg = raw("prod")
    cfg["site"]["stack"] = "qa"
    qa = monitoring_files(build_stack(cfg, "qa"))
    prod = monitoring_files(model("prod"))
    assert {path: text.replace("stack: prod", "stack: qa") for path, text in prod.items()} == qa
    assert qa != prod
