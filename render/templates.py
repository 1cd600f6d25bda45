"""The one Jinja environment every rendered file comes from (templates/ at the repo root)."""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

import jinja2

from . import quote

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, never an empty string
        keep_trailing_newline=True,
        autoescape=False,
    )
    # Key order kept as given: the output must be byte-stable for hashing and drift checks.
    env.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=False)
    # The one shell filter, and one writer per other format (render/quote.py; the lint in
    # tests/test_quoting.py holds every shell and unit template to them).
    env.filters["shquote"] = quote.sh
    env.filters["shell_code"] = quote.shell_code
    env.filters["comment"] = quote.comment
    env.filters["systemd_arg"] = quote.systemd_arg
    env.filters["systemd_value"] = quote.systemd_value
    env.filters["systemd_env"] = quote.systemd_env
    env.filters["nginx_str"] = quote.nginx_str
    env.filters["sshd_name"] = quote.sshd_name
    env.filters["yaml_value"] = quote.yaml_value
    env.filters["borgmatic_str"] = quote.borgmatic_str
    env.filters["borgmatic_word"] = quote.borgmatic_word
    env.filters["mtail_str"] = quote.mtail_str
    # 76-column lines, as base64(1) writes and reads them.
    env.filters["b64"] = lambda text: base64.encodebytes(text.encode()).decode().rstrip("\n")
    # One line, for the pieces of a file with late values (converge.sh.j2 decodes line by line).
    env.filters["b64line"] = lambda text: base64.b64encode(text.encode()).decode()
    return env


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)


def render_shell(name: str, **context) -> quote.Shell:
    """A shell-context template rendered as a step of the converge script (prepare/finish)."""
    return quote.Shell(render(name, **context))
