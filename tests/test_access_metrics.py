"""File tier of the proxy's request counts: the mtail program the proxy gets is compiled by the real
mtail and, run over a sample of the log nginx writes for it, counts requests per virtual host and
status class and shortlink hits per keyword, and nothing a visitor can forge."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from model import derive
from model.derive_monitoring import MTAIL_PORT, monitoring_host
from render import access_metrics, metrics
from render.quote import QuoteError, mtail_str
from render.roles import host_plan
from render.roles import monitoring as mr
from tests.program_runs import model
from tests.tools import need

pytestmark = pytest.mark.files


def _program_dir(tmp_path: Path, text: str) -> Path:
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "hypha-access.mtail").write_text(text)
    return progs


def _one_shot(tmp_path: Path, text: str, log_lines: list[str]) -> dict[tuple, float]:
    """Run the real mtail over `log_lines` once; the counters it ends with, by (name, labels)."""
    progs = _program_dir(tmp_path, text)
    log = tmp_path / "hypha-metrics.log"
    log.write_text("".join(line + "\n" for line in log_lines))
    out = subprocess.run(
        [need("mtail"), "--one_shot", "--one_shot_format", "prometheus", "--logtostderr", "--progs", str(progs), "--logs", str(log)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    counts = {}
    for line in out.stdout.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = tuple(sorted(p.split("=", 1) for p in labels.rstrip("}").split(",") if p and not p.startswith("prog=")))
        counts[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
    return counts


def test_the_prod_proxy_gets_mtail_reading_its_own_log_on_its_lan_address():
    stack = model("prod")
    proxy = derive.hosts_with_role(stack, "reverse_proxy")[0]
    plan = host_plan(stack, proxy)
    files = {f.path: f for f in plan.files}
    assert files[access_metrics.PROGRAM].check == "mtail"
    defaults = files[access_metrics.DEFAULTS].content
    assert f"LOGS={access_metrics.LOG}\n" in defaults
    assert f"HOST={stack.hosts[proxy].lan_ip}\nPORT={MTAIL_PORT}\n" in defaults
    assert "mtail" in plan.packages and "mtail" in plan.units
    # nginx writes that log, with the format the program reads.
    http = files["/etc/nginx/conf.d/hypha.conf"].content
    assert f"access_log {access_metrics.LOG} hypha_metrics;" in http
    assert "log_format hypha_metrics escape=json '$scheme $server_name $status $uri';" in http


def test_the_program_compiles_with_the_real_mtail(tmp_path):
    progs = _program_dir(tmp_path, access_metrics.program(model("prod")))
    out = subprocess.run([need("mtail"), "--compile_only", "--logtostderr", "--progs", str(progs)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_compile_check_refuses_a_broken_program(tmp_path):
    broken = access_metrics.program(model("prod")).rstrip().removesuffix("}")
    progs = _program_dir(tmp_path, broken)
    out = subprocess.run([need("mtail"), "--compile_only", "--logtostderr", "--progs", str(progs)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


def test_requests_are_counted_per_vhost_and_status_class_and_hits_per_keyword(tmp_path):
    stack = model("prod")
    link = access_metrics.shortener_vhost(stack)
    assert link == "link.hypha.coop"
    lines = (
        ["https hypha.coop 200 /"] * 3
        + ["https hypha.coop 404 /missing", "https hypha.coop 502 /"]
        + ["https link.hypha.coop 302 /loomio"] * 2
        + ["https link.hypha.coop 302 /LoomIO/", "https link.hypha.coop 302 /handbook"]
        # An unknown keyword is a 404: counted as a request, never as a keyword.
        + ["https link.hypha.coop 404 /no-such-link"]
        # Port 80 answers ACME and redirects: not counted.
        + ["http hypha.coop 301 /"]
        # A %0A in a path reaches the log JSON-escaped: still one line, no forged count.
        + ["https link.hypha.coop 404 /x\\nhttps hypha.coop 200 /"]
    )
    counts = _one_shot(tmp_path, access_metrics.program(stack), lines)
    req = metrics.HTTP_REQUESTS
    assert counts[(req, (("code_class", "2xx"), ("vhost", "hypha.coop")))] == 3
    assert counts[(req, (("code_class", "4xx"), ("vhost", "hypha.coop")))] == 1
    assert counts[(req, (("code_class", "5xx"), ("vhost", "hypha.coop")))] == 1
    assert counts[(req, (("code_class", "3xx"), ("vhost", link)))] == 4
    assert counts[(req, (("code_class", "4xx"), ("vhost", link)))] == 2
    assert (req, (("code_class", "3xx"), ("vhost", "hypha.coop"))) not in counts
    hits = {k[1][0][1]: v for k, v in counts.items() if k[0] == metrics.SHORTLINK_HITS}
    assert hits == {"loomio": 3, "handbook": 1}


def test_a_stack_without_a_shortener_counts_requests_only(tmp_path):
    stack = model("prod")
    stack = stack.model_copy(update={"services": {n: s for n, s in stack.services.items() if not s.shortlinks}})
    text = access_metrics.program(stack)
    assert metrics.SHORTLINK_HITS + "[" not in text
    counts = _one_shot(tmp_path, text, ["https link.hypha.coop 302 /loomio"])
    assert [k[0] for k in counts] == [metrics.HTTP_REQUESTS]


def test_prometheus_scrapes_each_proxy_and_only_the_monitoring_host_may():
    stack = model("prod")
    proxy = derive.hosts_with_role(stack, "reverse_proxy")[0]
    mon = monitoring_host(stack)
    jobs = {j["job_name"]: j for j in mr.scrape_jobs(stack, stack.monitoring)}
    assert jobs["access_log"]["static_configs"][0]["targets"] == [f"{stack.hosts[proxy].lan_ip}:{MTAIL_PORT}"]
    rules = [r for r in derive.inbound_rules(stack, proxy) if r.port == MTAIL_PORT]
    assert [(r.proto, r.source) for r in rules] == [("tcp", f"{stack.hosts[mon].lan_ip}/32")]
    assert not [r for h in stack.hosts if h != proxy for r in derive.inbound_rules(stack, h) if r.port == MTAIL_PORT]


def test_the_converge_check_passes_the_program_and_refuses_a_broken_one(tmp_path):
    from render.converge import converge_script
    from tests.test_wire import _check_function

    stack = model("prod")
    proxy = derive.hosts_with_role(stack, "reverse_proxy")[0]
    script = converge_script(stack, proxy)
    helper = script[script.index("check_mtail() {"):]
    fn = helper[: helper.index("\n}\n") + 3] + _check_function(script)
    good = access_metrics.program(stack)
    (tmp_path / "stage").mkdir()
    for text, ok in ((good, True), (good.rstrip().removesuffix("}"), False)):
        staged = tmp_path / "staged.mtail"
        staged.write_text(text)
        run = subprocess.run(["sh", "-c", f'STAGE={tmp_path / "stage"}\nfail() {{ exit 9; }}\n{fn}check "$1" "$2"', "sh", "mtail", str(staged)],
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode == 0) == ok, run.stderr


@pytest.mark.parametrize("bad", ['a"b', "a b", "x\ny", "a\\b", ""])
def test_an_mtail_string_takes_plain_words_only(bad):
    with pytest.raises(QuoteError):
        mtail_str(bad)
