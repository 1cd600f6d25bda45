"""The DMARC aggregate report parser the mail host pipes report mail to (templates/mail/dmarc-report.py):
report mails as receivers send them become node_exporter textfile metrics; hostile ones are counted as
errors, never parsed into anything."""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import sys
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from render.templates import TEMPLATES
from tests.tools import need

pytestmark = pytest.mark.files

SCRIPT = TEMPLATES / "mail" / "dmarc-report.py"


def report_xml(rows, report_id="r-1", org="google.com", domain="hypha.coop") -> bytes:
    records = "".join(
        f"""<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated>
        <disposition>{disp}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row>
        <identifiers><header_from>{domain}</header_from></identifiers>
        <auth_results><dkim><domain>{domain}</domain><result>{dkim}</result></dkim></auth_results></record>"""
        for ip, n, dkim, spf, disp in rows
    )
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback><report_metadata><org_name>{org}</org_name><email>noreply-dmarc-support@google.com</email>
<report_id>{report_id}</report_id><date_range><begin>1764547200</begin><end>1764633599</end></date_range>
</report_metadata><policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p>
<sp>quarantine</sp><pct>100</pct></policy_published>{records}</feedback>""".encode()


def mail(attachment: bytes, filename: str, ctype: tuple[str, str]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc-support@google.com"
    msg["To"] = "dmarc-reports@hypha.coop"
    msg["Subject"] = "Report domain: hypha.coop Submitter: google.com"
    msg.set_content("This is an aggregate report from google.com.")
    msg.add_attachment(attachment, maintype=ctype[0], subtype=ctype[1], filename=filename)
    return bytes(msg)


def zipped(xml: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("google.com!hypha.coop!1764547200!1764633599.xml", xml)
    return buf.getvalue()


def feed(state: Path, message: bytes) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), str(state)], input=message, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return (state / "dmarc.prom").read_text()


def value(metrics: str, name: str, **labels) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


ROWS = [("203.0.113.14", 12, "pass", "pass", "none"), ("198.51.100.7", 3, "fail", "fail", "quarantine")]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda x: mail(zipped(x), "report.zip", ("application", "zip")),
        lambda x: mail(gzip.compress(x), "report.xml.gz", ("application", "gzip")),
        lambda x: mail(x, "report.xml", ("text", "xml")),
    ],
    ids=["zip", "gzip", "xml"],
)
def test_an_aggregate_report_becomes_counts_per_source_and_result(tmp_path, wrap):
    metrics = feed(tmp_path, wrap(report_xml(ROWS)))
    ok = dict(reporter="google.com", domain="hypha.coop", source="203.0.113.14", dkim="pass", spf="pass", dmarc="pass")
    assert value(metrics, "hypha_dmarc_messages_total", **ok) == 12
    bad = dict(reporter="google.com", source="198.51.100.7", dmarc="fail", disposition="quarantine")
    assert value(metrics, "hypha_dmarc_messages_total", **bad) == 3
    assert value(metrics, "hypha_dmarc_last_failure_timestamp_seconds", source="198.51.100.7") > 0
    assert value(metrics, "hypha_dmarc_last_failure_timestamp_seconds", source="203.0.113.14") is None
    assert value(metrics, "hypha_dmarc_reports_total", reporter="google.com") == 1
    assert value(metrics, "hypha_dmarc_report_errors_total") == 0


def test_dmarc_passes_when_either_aligned_result_passes(tmp_path):
    metrics = feed(tmp_path, mail(report_xml([("192.0.2.1", 5, "pass", "fail", "none")]), "r.xml", ("text", "xml")))
    assert value(metrics, "hypha_dmarc_messages_total", source="192.0.2.1", dmarc="pass") == 5


def test_the_same_report_sent_twice_counts_once_and_a_new_one_adds_up(tmp_path):
    message = mail(zipped(report_xml(ROWS)), "report.zip", ("application", "zip"))
    feed(tmp_path, message)
    metrics = feed(tmp_path, message)
    assert value(metrics, "hypha_dmarc_messages_total", source="198.51.100.7") == 3
    metrics = feed(tmp_path, mail(zipped(report_xml(ROWS, report_id="r-2")), "report.zip", ("application", "zip")))
    assert value(metrics, "hypha_dmarc_messages_total", source="198.51.100.7") == 6
    assert value(metrics, "hypha_dmarc_reports_total", reporter="google.com") == 2


@pytest.mark.parametrize(
    "message",
    [
        mail(b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><feedback>&b;</feedback>',
             "bomb.xml", ("text", "xml")),
        mail(b"PK\x03\x04 not a zip at all", "report.zip", ("application", "zip")),
        mail(b"<feedback><record>", "cut.xml", ("text", "xml")),
        b"From: someone@example.org\n\nhello, no report here\n",
    ],
    ids=["entity-expansion", "broken-zip", "truncated-xml", "no-report"],
)
def test_a_hostile_or_broken_report_is_counted_as_an_error_and_adds_nothing(tmp_path, message):
    metrics = feed(tmp_path, message)
    assert value(metrics, "hypha_dmarc_report_errors_total") == 1
    assert value(metrics, "hypha_dmarc_messages_total") is None


def test_a_reporter_cannot_inject_labels_or_lines(tmp_path):
    xml = report_xml(ROWS, org='evil"} 1\nhypha_dmarc_fake 1 #')
    metrics = feed(tmp_path, mail(xml, "r.xml", ("text", "xml")))
    assert "hypha_dmarc_fake" not in [line.split("{")[0].split(" ")[0] for line in metrics.splitlines()]


def test_the_metrics_file_is_valid_exposition_format(tmp_path):
    metrics = feed(tmp_path, mail(zipped(report_xml(ROWS)), "report.zip", ("application", "zip")))
    done = subprocess.run([need("promtool", "prometheus"), "check", "metrics"], input=metrics, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
