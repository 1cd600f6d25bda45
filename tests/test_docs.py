"""The README's config reference is generated from model/stack.py and must never fall behind it."""

from __future__ import annotations

from typing import Optional

import pytest
from pydantic import Field, create_model

from ops import docs
from model.stack import MAP_SECTIONS, SECTIONS, Host

pytestmark = pytest.mark.program


def _readme() -> str:
    return docs.README.read_text(encoding="utf-8")


def test_readme_config_reference_matches_the_model():
    problem = docs.stale(_readme(), docs.reference())
    assert problem is None, problem


def test_an_edited_reference_block_is_reported_as_stale_with_the_fix():
    readme = _readme()
    block = docs.extract_block(readme)
    assert "`hosts.<name>.vm_id`" in block
    altered = readme.replace(block, block.replace("`hosts.<name>.vm_id`", "`hosts.<name>.vmid`"))
    problem = docs.stale(altered, docs.reference())
    assert problem is not None and "make docs" in problem


def test_a_field_added_to_the_model_makes_the_readme_stale():
    HostWithRack = create_model(
        "Host",
        __base__=Host,
        rack=(Optional[str], Field(default=None, description="Rack the node sits in.")),
    )
    changed = docs.reference(map_sections={**MAP_SECTIONS, "hosts": HostWithRack})
    assert "| `hosts.<name>.rack` | str | none | Rack the node sits in. |" in changed
    assert docs.stale(_readme(), changed) is not None
    assert docs.stale(docs.replace_block(_readme(), changed), changed) is None


def test_a_readme_without_the_markers_is_reported():
    problem = docs.stale("# hypha-infra\n", docs.reference())
    assert problem is not None and docs.START in problem


def test_every_field_of_every_model_has_a_description():
    blank = [
        key
        for _, _, rows in docs.tables()
        for key, field in rows
        if not (field.description and field.description.strip())
    ]
    assert blank == [], f"describe these fields in model/stack.py (Field(description=...)): {blank}"


def test_the_reference_covers_every_section_and_nested_model_in_order():
    text = docs.reference()
    headings = [line.split("`")[1] for line in text.splitlines() if line.startswith("### ")]
    assert headings == [*SECTIONS, *MAP_SECTIONS]
    for table in ("site.vm_ids", "proxmox.template", "proxmox.nodes.<name>", "network.public", "access.deploy"):
        assert f"#### `{table}`" in text
    assert "`hypha-infra:<section>`" in text
    assert "| `hosts.<name>.vm_id` | int, >= 100 | required |" in text
    assert "| `proxmox.nodes.<name>.storage` | map of name to int | required |" in text
    assert "| `network.resolvers` | list[IPv4 or IPv6 address], at least 1 | required |" in text


def test_types_are_written_for_people_not_python():
    text = docs.reference()
    for leak in ("typing.", "<class", "Optional[", "Literal[", "ipaddress.", "NoneType"):
        assert leak not in text


def test_the_reference_is_deterministic():
    assert docs.reference() == docs.reference()


def test_check_command_fails_on_a_stale_readme_and_names_the_fix(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{docs.START}\nold text\n{docs.END}\n\nafter\n", encoding="utf-8")
    assert docs.main(["--check"], readme_path=readme) == 1
    assert "make docs" in capsys.readouterr().err

    assert docs.main(["--write"], readme_path=readme) == 0
    written = readme.read_text(encoding="utf-8")
    assert written.startswith("# x\n\n") and written.endswith(f"{docs.END}\n\nafter\n")
    assert docs.main(["--check"], readme_path=readme) == 0


@pytest.mark.parametrize("readme_text", ["", "# no markers here\n"])
def test_write_refuses_a_readme_without_markers(tmp_path, readme_text):
    readme = tmp_path / "README.md"
    readme.write_text(readme_text, encoding="utf-8")
    assert docs.main(["--write"], readme_path=readme) == 1
    assert readme.read_text(encoding="utf-8") == readme_text
