"""Late values are made generically (components/late.py) from what the roles declare (Role.late)."""

from __future__ import annotations

import pytest

from components.late import KINDS, LateValues
from model.secrets import PROJECT_SECRET_KEYS
from ops.mockrun import OFFLINE_SECRETS
from render import wire
from render.converge import converge_script, late_names
from render.plan import LateValue
from render.roles import every_role
from render.roles import monitoring as mr
from tests.program_runs import STACKS, model, run

pytestmark = pytest.mark.program

DECLARATIONS = [d for role in every_role() for d in role.late]
# Stand-ins for the components: matching a name makes no resource.
COMPONENTS = {"backups": object(), "host-keys": object()}


def test_the_secrets_the_loader_refuses_in_clear_are_the_roles_config_secrets_and_the_deploy_key():
    declared = {d.source for d in DECLARATIONS if d.kind == "config-secret"}
    assert set(PROJECT_SECRET_KEYS) == declared | {"deployPrivateKey"}
    assert len(PROJECT_SECRET_KEYS) == len(set(PROJECT_SECRET_KEYS))


@pytest.mark.parametrize("stack", STACKS)
def test_every_late_value_a_script_asks_for_is_declared_by_exactly_one_role_declaration(stack):
    m = model(stack)
    late = LateValues(m, DECLARATIONS, COMPONENTS)
    names = {n for host in m.hosts for n in late_names(converge_script(m, host))}
    kinds = {late.declaration(n)[0].kind for n in names}
    assert kinds == set(KINDS) - ({"random-password", "ssh-keypair-private", "ssh-keypair-public"} if not m.backup else set())


def test_a_late_value_no_role_declares_is_an_error_naming_it():
    late = LateValues(model("prod"), DECLARATIONS, COMPONENTS)
    with pytest.raises(KeyError, match=r"'borg/passphrase-typo/bw1': no role declares it"):
        late.value("borg/passphrase-typo/bw1")
    with pytest.raises(KeyError, match=r"'hostkey/bw1/ecdsa-private': no role declares it"):
        late.value("hostkey/bw1/ecdsa-private")


def test_a_name_two_declarations_match_is_an_error():
    twice = [LateValue("x/.*", "config-secret", source="a"), LateValue("x/y", "config-secret", source="b")]
    with pytest.raises(KeyError, match=r"'x/y': declared more than once"):
        LateValues(model("prod"), twice, {}).value("x/y")


@pytest.mark.parametrize("decl,words", [
    (LateValue("x", "random-passwd", resource="r", parent="backups"), "unknown kind"),
    (LateValue("x", "random-password", parent="backups"), "needs resource"),
    (LateValue("x", "config-secret"), "needs source"),
    (LateValue("x", "ssh-keypair-public", resource="r", parent="nowhere"), "no component 'nowhere'"),
])
def test_a_declaration_that_cannot_be_made_is_refused_before_anything_is_made(decl, words):
    with pytest.raises(ValueError, match=words):
        LateValues(model("prod"), [decl], COMPONENTS)


@pytest.mark.parametrize("stack", STACKS)
def test_generated_secrets_keep_their_names_and_parent_and_a_keys_two_halves_share_one_resource(stack):
    r = run(stack)
    generated = [x for x in r.resources if x.name.startswith("borg-")]
    assert generated and all(x.parent_name == "backups" and "hypha:infra:Backups$" in x.urn for x in generated)
    assert len({x.urn for x in generated}) == len(generated)
    host_keys = [x for x in r.resources if x.name.startswith("ssh-host-")]
    assert host_keys and all(x.parent_name == "host-keys" for x in host_keys)


def test_a_config_secret_reaches_its_file_through_its_declared_encoding():
    r = run("prod")
    m = model("prod")
    (host,) = [h for h in m.hosts if "monitoring" in m.hosts[h].roles]
    (cmd,) = [x for x in r.resources if x.name == f"{host}-converge"]
    stdin = cmd.inputs["stdin"]
    files = {s.path: s.content() for s in wire.parse_stages(stdin["value"] if isinstance(stdin, dict) else stdin)}
    token = OFFLINE_SECRETS["hypha-infra:pveExporterToken"]
    assert any(mr.yaml_scalar(token) in text for text in files.values())
    assert files[mr.SMTP_PASSWORD_FILE] == OFFLINE_SECRETS["hypha-infra:alertSmtpPassword"]
