"""The one Jinja environment every rendered file comes from (templates/ at the repo root)."""

from __future__ import annotations

import base64
import json
import shlex
from functools import lru_cache
from pathlib import Path

import jinja2

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
    env.filters["shquote"] = shlex.quote
    # 76-column lines, as base64(1) writes and reads them.
    env.filters["b64"] = lambda text: base64.encodebytes(text.encode()).decode().rstrip("\n")
    # One line, for the pieces of a file with late values (converge.sh.j2 decodes line by line).
    env.filters["b64line"] = lambda text: base64.b64encode(text.encode()).decode()
    return env


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
