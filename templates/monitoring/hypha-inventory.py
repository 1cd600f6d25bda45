#!/usr/bin/python3
# Managed by hypha-infra; edits are overwritten. The inventory page (issue 16): what the co-op runs,
# whether it is up, how much it is used and how full the machines are, as static HTML.
#
# Run by hypha-inventory.timer on the monitoring host (render/inventory.py writes its config from
# the catalog). Asks Prometheus' HTTP API, writes <output>/index.html (everything, for members
# behind the login) and <output>/status.html (what is up and down, and the admins' note), then
# copies status.html to the off-site server when one is configured, so members can read it while
# this host or the proxy is down. Python's standard library only: it runs with Debian's python3.
#
# Every value from Prometheus or the config is HTML-escaped where it lands; the page has no
# JavaScript and loads nothing from anywhere (charts are inline SVG, styles inline).

import argparse
import base64
import datetime
import html
import json
import math
import os
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request

DAY = 86400


def log(message):
    print(message, file=sys.stderr, flush=True)


# --- Prometheus ---------------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, cfg, now):
        p = cfg["prometheus"]
        self.url = p["url"].rstrip("/")
        self.auth = None
        if p.get("user"):
            with open(p["password_file"], encoding="utf-8") as f:
                password = f.read().strip()
            self.auth = "Basic " + base64.b64encode(f"{p['user']}:{password}".encode()).decode()
        self.now = now

    def _get(self, path, params):
        req = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(params)}")
        if self.auth:
            req.add_header("Authorization", self.auth)
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.loads(r.read().decode())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {body.get('status')}: {body.get('error')}")
        return body["data"]["result"]

    def query(self, promql):
        """[(labels, value)] of an instant query at `now`."""
        out = []
        for r in self._get("/api/v1/query", {"query": promql, "time": f"{self.now:.3f}"}):
            out.append((r["metric"], _number(r["value"][1])))
        return out

    def series(self, promql, span=29 * DAY, step=DAY):
        """[(labels, {t: value})] of a range query from `span` seconds ago to now, one point per
        `step` (by default 30 daily points, the last one now)."""
        start = self.now - span
        result = self._get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{self.now:.3f}", "step": str(step)})
        return [(r["metric"], {float(t): _number(v) for t, v in r["values"]}) for r in result]

    def by(self, promql, label):
        return {m.get(label, ""): v for m, v in self.query(promql)}


def _number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def counted(metric, window):
    """The increase of a counter over `window`, exact for a series younger than the window.

    `increase()` extrapolates to the window's edges, which turns the 7 requests a log held into
    7.4; the difference to the value `window` ago is exact, and a series that did not exist then
    (or restarted since: the difference is negative) counts from zero, as mtail's counters start."""
    return f"(({metric} - {metric} offset {window}) >= 0 or {metric})"


# --- formatting ---------------------------------------------------------------------------------------

e = html.escape


def utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def ago(seconds):
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * DAY:
        return f"{seconds // 3600} h"
    return f"{seconds // DAY} days"


def size(n):
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def count(n):
    return "0" if n is None else f"{int(round(n)):,}"


def sparkline(points, title, lo=None, hi=None, width=120, height=24):
    """An inline SVG line of `points` (None for a gap), scaled between lo and hi."""
    values = [v for v in points if v is not None]
    if not values:
        return f'<span class="none" title="{e(title)}">no data</span>'
    lo = min(values) if lo is None else lo
    hi = max(values) if hi is None else hi
    span = (hi - lo) or 1
    n = max(len(points) - 1, 1)
    runs, run = [], []
    for i, v in enumerate(points):
        if v is None:
            if run:
                runs.append(run)
            run = []
            continue
        x = i * width / n
        y = height - 2 - (v - lo) / span * (height - 4)
        run.append(f"{x:.1f},{y:.1f}")
    if run:
        runs.append(run)
    lines = "".join(
        f'<polyline points="{" ".join(r)}"/>' if len(r) > 1 else f'<circle cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="1.5"/>'
        for r in runs
    )
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>{e(title)}</title>{lines}</svg>"
    )


def daily(series_points, now, days=30):
    """A range query's {t: v} as a list of `days` values, oldest first (None where missing). By
    nearest day: Prometheus answers with millisecond timestamps, not the float it was asked with."""
    start = now - (days - 1) * DAY
    out = [None] * days
    for t, v in series_points.items():
        i = round((t - start) / DAY)
        if 0 <= i < days:
            out[i] = v
    return out


# --- the facts ----------------------------------------------------------------------------------------


def gather(cfg, prom):
    now = prom.now
    facts = {"now": now}
    up = prom.by('min by (service) (probe_success{job="probe_http"})', "service")
    facts["up"] = up
    facts["uptime"] = prom.by('avg by (service) (avg_over_time(probe_success{job="probe_http"}[30d]))', "service")
    facts["uptime_daily"] = {
        m.get("service", ""): daily(p, now)
        for m, p in prom.series('avg by (service) (avg_over_time(probe_success{job="probe_http"}[1d]))')
    }
    # Since when each service is in its present state: the first point after the last one in which
    # it was not, asked of the last hour every 10 s, else of the day every minute; a state all of
    # the day had is "for over" the span the day holds.
    since = {}
    probe = 'min by (service) (probe_success{job="probe_http"})'
    for span, step in ((3600, 10), (DAY, 60)):
        for m, points in prom.series(probe, span=span, step=step):
            name = m.get("service", "")
            current, times = up.get(name), sorted(points)
            if current is None or not times or (name in since and not since[name][1]):
                continue
            other = [t for t in times if points[t] != current]
            if other:
                later = [t for t in times if t > other[-1]]
                since[name] = (later[0] if later else other[-1] + step, False)
            elif name not in since or times[0] < since[name][0]:
                since[name] = (times[0], True)
    facts["since"] = since
    facts["tls"] = prom.by('min by (service) (probe_ssl_earliest_cert_expiry{job="probe_http"})', "service")
    facts["backup"] = prom.by(f"max by (repository) ({cfg['metrics']['backup_last_success']})", "repository")
    facts["drill"] = prom.by(f"max by (repository) ({cfg['metrics']['drill_last_success']})", "repository")
    facts["drill_ok"] = prom.by(f"min by (repository) ({cfg['metrics']['drill_ok']})", "repository")

    requests = cfg["metrics"]["http_requests"]
    per_class = {}
    for m, v in prom.query(f"sum by (vhost, code_class) ({counted(requests, '1d')})"):
        per_class.setdefault(m.get("vhost", ""), {})[m.get("code_class", "")] = v
    facts["requests"] = per_class
    facts["requests_daily"] = {
        m.get("vhost", ""): daily(p, now) for m, p in prom.series(f"sum by (vhost) ({counted(requests, '1d')})")
    }
    facts["hits"] = {}
    if cfg["shortlinks"]:
        hits = cfg["metrics"]["shortlink_hits"]
        facts["hits"] = {k: v for k, v in prom.by(f"sum by (keyword) ({counted(hits, '30d')})", "keyword").items() if v}

    nodes = {}
    for node in cfg["nodes"]:
        # A JSON string is a valid PromQL string literal (both Go-style double-quoted).
        nid = json.dumps(f'node/{node["name"]}')
        q = lambda metric: prom.query(f"{metric}{{id={nid}}}")  # noqa: E731
        got = {k: next((v for _, v in q(m)), None) for k, m in (
            ("mem_used", "pve_memory_usage_bytes"), ("mem_size", "pve_memory_size_bytes"),
            ("cpu_ratio", "pve_cpu_usage_ratio"), ("cpu_limit", "pve_cpu_usage_limit"))}
        got["storage"] = {}
        for ds in node["storage"]:
            sid = json.dumps(f'storage/{node["name"]}/{ds}')
            used = prom.query(f"pve_disk_usage_bytes{{id={sid}}}")
            total = prom.query(f"pve_disk_size_bytes{{id={sid}}}")
            got["storage"][ds] = (used[0][1] if used else None, total[0][1] if total else None)
        mem = prom.series(f"avg_over_time(pve_memory_usage_bytes{{id={nid}}}[1d])")
        got["mem_daily"] = daily(mem[0][1], now) if mem else []
        nodes[node["name"]] = got
    facts["nodes"] = nodes

    free_metric = cfg["metrics"]["backup_free"]
    free = prom.query(f"min({free_metric})")
    slope = prom.query(f"min(deriv({free_metric}[7d]))")
    facts["backup_free"] = free[0][1] if free else None
    facts["backup_slope"] = slope[0][1] if slope else None
    series = prom.series(f"min(avg_over_time({free_metric}[1d]))")
    facts["backup_free_daily"] = daily(series[0][1], now) if series else []
    return facts


def full_in_days(free, slope):
    """Days until the backup disk is full at the present trend (bytes per second), None if not shrinking."""
    if free is None or slope is None or slope >= 0:
        return None
    return free / (-slope) / DAY


# --- the page -----------------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#1b1b1b}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;background:#f6f6f6}.up{color:#0a6b2d;font-weight:600}.down{color:#b00020;font-weight:600}
.retired,.none{color:#777}.warn{color:#a15c00;font-weight:600}.note{border-left:4px solid #a15c00;background:#fff7e6;padding:.6em 1em;white-space:pre-wrap}
.spark{vertical-align:middle}.spark polyline{fill:none;stroke:#3558a8;stroke-width:1.5}.spark circle{fill:#3558a8}
.stamp{color:#555}code{font-size:.95em}
"""


def head(title, now, refresh=True):
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # For people and tools that judge the page's age: the time it was generated, machine-readable.
        f'<meta name="generated" content="{stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
        + ('<meta http-equiv="refresh" content="300">' if refresh else "")
        + f"<style>{STYLE}</style></head><body>\n"
    )


def stamp_block(cfg, now):
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'<p class="stamp" id="generated">Generated at <time datetime="{iso}">{e(utc(now))}</time> '
        f"({e(stamp.strftime('%a, %d %b %Y %H:%M:%S GMT'))}). It is rebuilt every few minutes: "
        f"if this is more than {cfg['stale_minutes']} minutes old, the monitoring host is down "
        "and what it says below may no longer be true.</p>\n"
    )


def note_block(cfg):
    path = cfg.get("note_file")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(20000).strip()
        posted = os.stat(path).st_mtime
    except (OSError, TypeError):
        return ""
    if not text:
        return ""
    return (
        f'<h2>Note from the admins</h2><div class="note" id="note">{e(text)}</div>'
        f'<p class="stamp">Posted {e(utc(posted))}.</p>\n'
    )


def state_cell(svc, facts):
    name = svc["name"]
    if svc.get("retired"):
        return '<td class="retired">retired</td>'
    if not svc["probed"]:
        return '<td class="none">not probed</td>'
    v = facts["up"].get(name)
    if v is None:
        return '<td class="none">no data</td>'
    word, cls = ("up", "up") if v >= 1 else ("down", "down")
    since = facts["since"].get(name)
    when = ""
    if since:
        t, before = since
        when = f" for over {ago(facts['now'] - t)}" if before else f" since {utc(t)}"
    return f'<td class="{cls}" data-state="{word}">{word}{e(when)}</td>'


def status_table(cfg, facts):
    rows = []
    for svc in cfg["services"]:
        urls = " ".join(f'<a href="{e(u)}">{e(u)}</a>' for u in svc["urls"][:1])
        rows.append(f'<tr id="status-{e(svc["name"])}"><td>{e(svc["name"])}</td><td>{urls}</td>{state_cell(svc, facts)}</tr>')
    return "<table><tr><th>Service</th><th>Address</th><th>Now</th></tr>\n" + "\n".join(rows) + "</table>\n"


def status_page(cfg, facts):
    now = facts["now"]
    down = [s["name"] for s in cfg["services"] if s["probed"] and not s.get("retired") and facts["up"].get(s["name"], 1) < 1]
    summary = (f'<p class="down" id="summary">Down: {e(", ".join(down))}</p>' if down
               else '<p class="up" id="summary">Everything probed is up.</p>')
    return (
        head(f"{cfg['site']} status", now)
        + f"<h1>{e(cfg['site'])} status</h1>\n"
        + stamp_block(cfg, now)
        + note_block(cfg)
        + summary
        + status_table(cfg, facts)
        + "</body></html>\n"
    )


def services_section(cfg, facts):
    now = facts["now"]
    rows = []
    for svc in cfg["services"]:
        name = svc["name"]
        urls = "<br>".join(f'<a href="{e(u)}">{e(u)}</a>' for u in svc["urls"]) or '<span class="none">none</span>'
        retired = svc.get("retired")
        if retired:
            where = (f', now <a href="{e(retired["redirect"])}">{e(retired["redirect"])}</a>' if retired.get("redirect")
                     else ", its names answer 410 Gone")
            rows.append(
                f'<tr id="svc-{e(name)}" class="retired"><td>{e(name)}</td><td>{urls}</td><td>{e(svc["host"])}</td>'
                f'<td>{e(svc["reach"])}</td><td colspan="5">retired on {e(str(retired["date"]))}{where}</td></tr>'
            )
            continue
        uptime = facts["uptime"].get(name)
        up_text = f"{uptime * 100:.2f}%" if uptime is not None else "–"
        spark = sparkline(facts["uptime_daily"].get(name, []), f"{name}: daily uptime, 30 days", 0, 1) if svc["probed"] else ""
        tls = facts["tls"].get(name)
        if tls is None:
            tls_text = '<span class="none">–</span>'
        else:
            days = (tls - now) / DAY
            tls_text = f'<span class="{"warn" if days < 14 else ""}">{e(utc(tls)[:10])} ({days:.0f} days)</span>'
        repo = svc.get("backup")
        if repo:
            b = facts["backup"].get(repo)
            backup = (f'<span class="{"warn" if now - b > cfg["backup_max_age"] else "up"}">{e(utc(b))} ({ago(now - b)} ago)</span>'
                      if b else '<span class="down">never</span>')
            d, ok = facts["drill"].get(repo), facts["drill_ok"].get(repo)
            result = "" if ok is None else (" passed" if ok >= 1 else ' <span class="down">last one FAILED</span>')
            drill = f"{e(utc(d))}{result}" if d else f'<span class="down">never passed</span>{result}'
        else:
            backup = drill = '<span class="none">no data kept</span>'
        rows.append(
            f'<tr id="svc-{e(name)}"><td>{e(name)}</td><td>{urls}</td><td>{e(svc["host"])}</td><td>{e(svc["reach"])}</td>'
            f"{state_cell(svc, facts)}<td>{up_text} {spark}</td><td>{tls_text}</td><td>{backup}</td><td>{drill}</td></tr>"
        )
    return (
        "<h2>Services</h2><table><tr><th>Service</th><th>Addresses</th><th>Host</th><th>Who reaches it</th><th>Now</th>"
        "<th>Uptime (30 days)</th><th>Certificate</th><th>Last backup</th><th>Last restore drill</th></tr>\n"
        + "\n".join(rows) + "</table>\n"
    )


def use_section(cfg, facts):
    classes = ("2xx", "3xx", "4xx", "5xx")
    rows = []
    for vhost in cfg["vhosts"]:
        got = facts["requests"].get(vhost, {})
        total = sum(v for v in got.values() if v)
        cells = "".join(f'<td data-class="{c}">{count(got.get(c))}</td>' for c in classes)
        spark = sparkline(facts["requests_daily"].get(vhost, []), f"{vhost}: requests per day, 30 days", 0)
        rows.append(f'<tr id="use-{e(vhost)}"><td>{e(vhost)}</td><td data-total>{count(total)}</td>{cells}<td>{spark}</td></tr>')
    out = (
        "<h2>Use</h2><p>Requests to each name the proxy serves in the last 24 hours, by status class.</p>"
        "<table><tr><th>Name</th><th>Requests</th>" + "".join(f"<th>{c}</th>" for c in classes)
        + "<th>Per day, 30 days</th></tr>\n" + "\n".join(rows) + "</table>\n"
    )
    sl = cfg["shortlinks"]
    if sl:
        hits = facts["hits"]
        top = sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg["top_keywords"]]
        unused = [k for k in sl["keywords"] if not hits.get(k)]
        out += (
            f"<h3>Short links on {e(sl['vhost'])} (last 30 days)</h3><table id=\"top-keywords\"><tr><th>Keyword</th><th>Hits</th></tr>"
            + "".join(f'<tr><td><a href="https://{e(sl["vhost"])}/{e(k)}">{e(k)}</a></td><td data-keyword="{e(k)}">{count(v)}</td></tr>' for k, v in top)
            + "</table>"
            + f'<p id="unused-keywords">Not used in 30 days ({len(unused)} of {len(sl["keywords"])}; '
            "candidates for pruning from shortlinks.csv): "
            + (", ".join(f"<code>{e(k)}</code>" for k in unused) or "none") + "</p>\n"
        )
    return out


def capacity_section(cfg, facts):
    rows = []
    for node in cfg["nodes"]:
        got = facts["nodes"].get(node["name"], {})
        p = node["planned"]
        mem_used, mem_size = got.get("mem_used"), got.get("mem_size")
        mem_now = f"{size(mem_used)} of {size(mem_size)} ({mem_used / mem_size * 100:.0f}%)" if mem_used is not None and mem_size else "no data"
        cpu = got.get("cpu_ratio")
        cpu_now = f"{cpu * 100:.0f}% of {count(got.get('cpu_limit'))} threads" if cpu is not None else "no data"
        spark = sparkline(got.get("mem_daily", []), f"{node['name']}: RAM in use per day, 30 days", 0, mem_size)
        rows.append(
            f'<tr id="node-{e(node["name"])}-memory"><td>{e(node["name"])}</td><td>RAM</td>'
            f'<td>{count(p["memory_mb"][0])} MiB of {count(p["memory_mb"][1])} MiB for VMs</td><td data-now>{e(mem_now)}</td><td>{spark}</td></tr>'
        )
        rows.append(
            f'<tr id="node-{e(node["name"])}-cpu"><td>{e(node["name"])}</td><td>CPU</td>'
            f'<td>{count(p["vcpus"][0])} of {count(p["vcpus"][1])} vCPUs</td><td data-now>{e(cpu_now)}</td><td></td></tr>'
        )
        for ds, (used, offered) in sorted(p["storage"].items()):
            u, t = got.get("storage", {}).get(ds, (None, None))
            now_text = f"{size(u)} of {size(t)} used" if u is not None and t else "no data"
            rows.append(
                f'<tr id="node-{e(node["name"])}-storage-{e(ds)}"><td>{e(node["name"])}</td><td>storage {e(ds)}</td>'
                f"<td>{count(used)} GiB of {count(offered)} GiB</td><td data-now>{e(now_text)}</td><td></td></tr>"
            )
    out = (
        "<h2>Capacity</h2><p>What the stack plans (the figures of <code>make plan</code>) against what Proxmox reports now.</p>"
        "<table><tr><th>Node</th><th>What</th><th>Planned</th><th>In use now</th><th>30 days</th></tr>\n"
        + "\n".join(rows) + "</table>\n"
    )
    if cfg["backup_target"]:
        free, slope = facts["backup_free"], facts["backup_slope"]
        days = full_in_days(free, slope)
        trend = ("not filling up" if days is None and free is not None else "no data" if free is None
                 else f"full in {days:.0f} days at the 7-day trend")
        cls = "warn" if days is not None and days < cfg["backup_full_warn_days"] else ""
        spark = sparkline(facts["backup_free_daily"], "backup disk free space per day, 30 days", 0)
        out += (
            f'<p id="backup-space">Backup target {e(cfg["backup_target"])}: {e(size(free))} free, '
            f'<span class="{cls}" id="backup-full-in">{e(trend)}</span>. {spark}</p>\n'
        )
    return out


def full_page(cfg, facts):
    now = facts["now"]
    links = "".join(f'<li><a href="{e(u)}">{e(n)}</a></li>' for n, u in cfg["monitoring_links"])
    return (
        head(f"{cfg['site']} inventory", now)
        + f"<h1>{e(cfg['site'])}: what we run</h1>\n"
        + stamp_block(cfg, now)
        + note_block(cfg)
        + services_section(cfg, facts)
        + use_section(cfg, facts)
        + capacity_section(cfg, facts)
        + f'<h2>More</h2><ul><li><a href="status.html">Status page</a> (its off-site copy stays up when this host is down)</li>{links}</ul>'
        + "</body></html>\n"
    )


# --- output -------------------------------------------------------------------------------------------


def write(path, text, mtime):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def push(cfg, path):
    """status.html to the off-site server over SSH, its host key pinned; the file keeps its time."""
    o = cfg["offsite"]
    ssh = ["ssh", "-i", o["key"], "-p", str(o["port"]), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=20", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={o['known_hosts']}"]
    out = subprocess.run(
        ["rsync", "--times", "--chmod=F644", "--timeout=60", "-e", shlex.join(ssh), path,
         f"{o['user']}@{o['host']}:{o['path'].rstrip('/')}/index.html"],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"rsync to {o['host']} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-600:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the inventory and status pages from Prometheus.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--no-push", action="store_true", help="write the pages, do not copy status.html off-site")
    a = parser.parse_args(argv)
    with open(a.config, encoding="utf-8") as f:
        cfg = json.load(f)
    now = time.time()
    started = time.monotonic()
    facts = gather(cfg, Prometheus(cfg, now))
    out = cfg["output"]
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "index.html"), full_page(cfg, facts), now)
    status = os.path.join(out, "status.html")
    write(status, status_page(cfg, facts), now)
    log(f"pages written to {out} in {time.monotonic() - started:.1f} s")
    if cfg.get("offsite") and not a.no_push:
        push(cfg, status)
        log(f"status copied to {cfg['offsite']['host']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - one line in the journal, and the unit fails (SystemdUnitFailed)
        log(f"hypha-inventory FAILED: {exc}")
        sys.exit(1)
