#!/usr/bin/python3
# Managed by hypha-infra; edits are overwritten. DMARC aggregate reports (RFC 7489 appendix C) to
# node_exporter textfile metrics. Postfix's `dmarc` pipe transport runs it once per message, as an
# unprivileged user, with the message on stdin and the state directory as its one argument.
#
# Standard library only (a report is a small XML file, often zipped or gzipped): parsedmarc would
# bring Elasticsearch, Kafka and geoip clients to a mail host for the same few fields.
# Reports are untrusted input: sizes are capped before and after decompression, a document with a
# DTD is refused (no entity expansion of any kind), and a report id counts once however often sent.
#
# Metrics (counters since the first report, so Prometheus' increase() shows new failures):
#   hypha_dmarc_messages_total{reporter, domain, source, dkim, spf, dmarc, disposition}
#   hypha_dmarc_last_failure_timestamp_seconds{reporter, domain, source}: when a report last
#     counted a failing message from that source (the alert DmarcFailures reads it)
#   hypha_dmarc_reports_total{reporter}, hypha_dmarc_report_errors_total,
#   hypha_dmarc_last_report_timestamp_seconds
import email
import email.policy
import gzip
import io
import ipaddress
import json
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile

MAX_MESSAGE = 20 * 1024 * 1024
MAX_XML = 20 * 1024 * 1024
MAX_SOURCES = 200  # distinct source addresses kept as labels; more are counted as source="other"
MAX_IDS = 5000  # report ids remembered for de-duplication
RESULTS = {"pass", "fail", "none", "neutral", "softfail", "temperror", "permerror", "policy"}
DISPOSITIONS = {"none", "quarantine", "reject"}
EX_TEMPFAIL = 75


class Refused(ValueError):
    pass


def _text(node, path, default=""):
    found = node.find(path)
    return (found.text or "").strip() if found is not None and found.text else default


def _label(value, limit=253):
    """A label value: printable ASCII, bounded (the reporter writes these)."""
    value = "".join(c for c in value if 0x20 < ord(c) < 0x7F)[:limit]
    return value or "unknown"


def documents(raw: bytes):
    """The XML documents in a report mail: zip, gzip or plain XML parts (or the whole body)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = [p for p in msg.walk() if not p.is_multipart()]
    for part in parts:
        data = part.get_payload(decode=True) or b""
        name = (part.get_filename() or "").lower()
        ctype = part.get_content_type()
        if data[:4] == b"PK\x03\x04" or name.endswith(".zip") or ctype in ("application/zip", "application/x-zip-compressed"):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    if info.file_size > MAX_XML:
                        raise Refused(f"{info.filename} unpacks to {info.file_size} bytes")
                    with z.open(info) as f:
                        yield f.read(MAX_XML + 1)
        elif data[:2] == b"\x1f\x8b" or name.endswith(".gz") or ctype in ("application/gzip", "application/x-gzip"):
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                yield f.read(MAX_XML + 1)
        elif ctype in ("text/xml", "application/xml") or data.lstrip().startswith(b"<?xml") or data.lstrip().startswith(b"<feedback"):
            yield data


def parse(xml: bytes) -> dict:
    if len(xml) > MAX_XML:
        raise Refused("the report is larger than its cap")
    if b"<!DOCTYPE" in xml.upper() or b"<!ENTITY" in xml.upper():
        raise Refused("the report has a DTD; aggregate reports have none")
    root = ET.fromstring(xml)
    if root.tag != "feedback":
        raise Refused(f"the root element is {root.tag!r}, not feedback")
    report = {
        "reporter": _label(_text(root, "report_metadata/org_name")),
        "id": _label(_text(root, "report_metadata/report_id"), 512),
        "domain": _label(_text(root, "policy_published/domain").lower()),
        "rows": [],
    }
    for record in root.findall("record"):
        row = record.find("row")
        if row is None:
            continue
        try:
            source = str(ipaddress.ip_address(_text(row, "source_ip")))
        except ValueError:
            source = "invalid"
        try:
            count = int(_text(row, "count", "0"))
        except ValueError:
            count = 0
        if not 0 <= count <= 10**9:
            count = 0
        dkim = _text(row, "policy_evaluated/dkim", "none").lower()
        spf = _text(row, "policy_evaluated/spf", "none").lower()
        disposition = _text(row, "policy_evaluated/disposition", "none").lower()
        domain = _label(_text(record, "identifiers/header_from", report["domain"]).lower())
        report["rows"].append({
            "source": source,
            "count": count,
            "dkim": dkim if dkim in RESULTS else "other",
            "spf": spf if spf in RESULTS else "other",
            # RFC 7489 section 6.6.2: DMARC passes when an aligned DKIM or SPF result passes.
            "dmarc": "pass" if "pass" in (dkim, spf) else "fail",
            "disposition": disposition if disposition in DISPOSITIONS else "other",
            "domain": domain,
        })
    return report


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def metrics(state: dict) -> str:
    out = [
        "# HELP hypha_dmarc_messages_total Messages in DMARC aggregate reports, by reporter, domain, source and result.",
        "# TYPE hypha_dmarc_messages_total counter",
    ]
    for key, count in sorted(state["messages"].items()):
        labels = dict(zip(("reporter", "domain", "source", "dkim", "spf", "dmarc", "disposition"), json.loads(key)))
        text = ",".join(f'{k}="{_quote(v)}"' for k, v in labels.items())
        out.append(f"hypha_dmarc_messages_total{{{text}}} {count}")
    out += ["# HELP hypha_dmarc_last_failure_timestamp_seconds When a report last counted mail from the source failing DMARC.",
            "# TYPE hypha_dmarc_last_failure_timestamp_seconds gauge"]
    for key, when in sorted(state["failures"].items()):
        labels = dict(zip(("reporter", "domain", "source"), json.loads(key)))
        text = ",".join(f'{k}="{_quote(v)}"' for k, v in labels.items())
        out.append(f"hypha_dmarc_last_failure_timestamp_seconds{{{text}}} {when}")
    out += ["# HELP hypha_dmarc_reports_total Aggregate reports counted, by reporter.", "# TYPE hypha_dmarc_reports_total counter"]
    out += [f'hypha_dmarc_reports_total{{reporter="{_quote(r)}"}} {n}' for r, n in sorted(state["reports"].items())]
    out += ["# HELP hypha_dmarc_report_errors_total Report mails that could not be read.", "# TYPE hypha_dmarc_report_errors_total counter",
            f"hypha_dmarc_report_errors_total {state['errors']}"]
    out += ["# HELP hypha_dmarc_last_report_timestamp_seconds When the last report was counted.",
            "# TYPE hypha_dmarc_last_report_timestamp_seconds gauge",
            f"hypha_dmarc_last_report_timestamp_seconds {state['last']}"]
    return "\n".join(out) + "\n"


def _write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def count(state: dict, report: dict) -> None:
    seen = state["ids"]
    rid = f"{report['reporter']}/{report['id']}"
    if rid in seen:
        return
    seen.append(rid)
    del seen[:-MAX_IDS]
    sources = state["sources"]
    for row in report["rows"]:
        source = row["source"]
        if source not in sources:
            if len(sources) >= MAX_SOURCES:
                source = "other"
            else:
                sources.append(source)
        key = json.dumps([report["reporter"], row["domain"], source, row["dkim"], row["spf"], row["dmarc"], row["disposition"]])
        state["messages"][key] = state["messages"].get(key, 0) + row["count"]
        if row["dmarc"] == "fail" and row["count"] > 0:
            state["failures"][json.dumps([report["reporter"], row["domain"], source])] = int(time.time())
    state["reports"][report["reporter"]] = state["reports"].get(report["reporter"], 0) + 1
    state["last"] = int(time.time())


def main(argv) -> int:
    state_dir = argv[1]
    state_file = os.path.join(state_dir, "state.json")
    try:
        with open(state_file) as f:
            state = json.load(f)
    except FileNotFoundError:
        state = {}
    for key, empty in (("messages", {}), ("failures", {}), ("reports", {}), ("errors", 0), ("last", 0), ("ids", []), ("sources", [])):
        state.setdefault(key, empty)
    raw = sys.stdin.buffer.read(MAX_MESSAGE + 1)
    try:
        if len(raw) > MAX_MESSAGE:
            raise Refused("the message is larger than its cap")
        reports = [parse(doc) for doc in documents(raw)]
        if not reports:
            raise Refused("the message holds no aggregate report")
        for report in reports:
            count(state, report)
    except (Refused, ET.ParseError, zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        # Counted and dropped: a bounce would go to a robot, and a retry would fail the same way.
        state["errors"] += 1
        print(f"dmarc-report: not counted: {exc}", file=sys.stderr)
    try:
        _write(state_file, json.dumps(state))
        _write(os.path.join(state_dir, "dmarc.prom"), metrics(state))
    except OSError as exc:
        print(f"dmarc-report: cannot write the state: {exc}", file=sys.stderr)
        return EX_TEMPFAIL  # Postfix keeps the message and tries again
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
