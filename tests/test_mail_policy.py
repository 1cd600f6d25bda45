"""The policy that holds DMARC back until the mail host signs, both ways, on what the program registers."""

from __future__ import annotations

import copy

import pytest

from model.load import read_stack_config
from ops.mockrun import run_stack
from tests.policy_cases import ZONE, file_of, fresh, set_file
from tests.test_policy import messages, passes

pytestmark = pytest.mark.program

POLICY = "dmarc-enforced-only-when-signed"
DKIM_CONF = "/etc/opendkim.conf"


def test_prod_may_quarantine_because_its_mail_host_signs_with_a_published_key():
    run = fresh("prod")
    assert "p=quarantine" in file_of(run, "dns", ZONE)
    assert passes(run, POLICY)


def test_staging_may_reject_because_its_mail_host_signs_too():
    assert passes(fresh("staging"), POLICY)


def test_quarantine_without_a_signing_host_is_refused():
    raw = copy.deepcopy(read_stack_config("prod"))
    raw["hosts"]["lists"]["roles"] = ["app"]  # no mail role: no OpenDKIM, no key in the zone
    run = run_stack("prod", raw=raw)
    assert messages(run, POLICY) == [
        "hypha.coop: DMARC p=quarantine while no host with role mail signs the domain's mail with a key the zone "
        "publishes, so receivers would refuse its own mail; set dns.dmarc.policy: none until one does"
    ]


def test_a_signer_whose_selector_the_zone_does_not_publish_does_not_count():
    run = fresh("prod")
    conf = file_of(run, "lists", DKIM_CONF).replace("mail2026", "mail2099")
    set_file(run, "lists", DKIM_CONF, conf)
    assert len(messages(run, POLICY)) == 1


def test_policy_none_needs_no_signer_and_a_domain_that_sends_nothing_may_reject():
    raw = copy.deepcopy(read_stack_config("prod"))
    raw["hosts"]["lists"]["roles"] = ["app"]
    raw["dns"]["dmarc"]["policy"] = "none"
    assert passes(run_stack("prod", raw=raw), POLICY)
    raw = copy.deepcopy(read_stack_config("staging"))
    raw["hosts"]["lists"]["roles"] = ["app"]  # no mx, no signer: `v=spf1 -all`, it sends no mail
    run = run_stack("staging", raw=raw)
    assert '"v=spf1 -all"' in file_of(run, "dns", "/etc/bind/hypha/staging.hypha.coop.zone")
    assert passes(run, POLICY)
