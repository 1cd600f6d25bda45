"""The converge script's wire format, written and read in this one place.

- The late-value marks: `late(name)` puts `\\x00late:<name>\\x00` in a ManagedFile's content; the
  rendered script carries `@@HYPHA_LATE:<name>@@` where the value goes, and `render.converge.fill`
  puts the value in (base64) on its way to the host's stdin.
- The stage call: one `stage <index> <path> <mode> <owner> <group> <unit> <action> <checker>` line
  per managed file with its content in a heredoc (base64; a file with late values as one base64
  line per piece, the late ones as placeholders). `stage_call` writes it (templates/converge.sh.j2
  pastes it), `parse_stages` reads it back (the policy pack, the tests).
- The checker table: every name a ManagedFile may give as `check`, and what the host runs for it.
  The template's `check()` case statement is rendered from it.

A leaf module (standard library only): render/plan.py, render/converge.py, render/hostkeys.py and
policy/view.py (in the pack's own process) all import it.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional

# --- late values -----------------------------------------------------------------------------------

LATE_NAME = re.compile(r"[a-z0-9][a-z0-9/_.-]*")
LATE_MARK = re.compile(rf"\x00late:({LATE_NAME.pattern})\x00")
"""A late value inside a ManagedFile's content (render.plan.late)."""
LATE_PLACEHOLDER = re.compile(rf"@@HYPHA_LATE:({LATE_NAME.pattern})@@")
"""A late value inside a rendered script, where `fill` puts its base64."""
LATE_TOKEN = "@@HYPHA_LATE:{}@@"
"""How a script other than the converge's (render/hostkeys.rotation_script) asks for a late value."""


def late(name: str) -> str:
    """A placeholder for the late value `name` inside a ManagedFile's content."""
    assert LATE_NAME.fullmatch(name), name
    return f"\x00late:{name}\x00"


def late_token(name: str) -> str:
    """The placeholder for the late value `name` inside a script."""
    assert LATE_NAME.fullmatch(name), name
    return LATE_TOKEN.format(name)


# --- the checker table -----------------------------------------------------------------------------

FILE = "{file}"
"""Where the staged file goes in a checker's argv."""


@dataclass(frozen=True)
class Checker:
    """What the converge runs on a staged file before it goes live; non-zero refuses the file.

    `argv` is the command (FILE stands for the staged file) where one command does; `shell` is
    shell code (the staged file is "$2", the stage directory $STAGE) for the checkers that need
    more: a candidate tree of the daemon's config (sshd, nginx) or a value read from the file.
    `package` is the Debian package holding the command (on the host and the test machine).
    """

    package: str
    argv: tuple[str, ...] = ()
    shell: Optional[str] = None
    quiet: bool = False
    """Its stdout is dropped (a dump or a summary nobody reads on success)."""
    nonempty: bool = False
    """An empty file is refused first (ssh-keygen -l takes an empty file as no keys at all)."""

    def case_body(self) -> str:
        """The shell the template's `check()` runs for this checker."""
        if self.shell is not None:
            return self.shell
        words = " ".join('"$2"' if w == FILE else shlex.quote(w) for w in self.argv)
        return ('test -s "$2" && ' if self.nonempty else "") + words + (" >/dev/null" if self.quiet else "")

    def command(self, path: str, resolve: Callable[[str, str], str] = lambda cmd, _pkg: cmd) -> list[str]:
        """The argv for a file at `path`; `resolve(command, package)` finds the command (tests)."""
        assert self.argv, "a shell checker has no argv"
        return [resolve(self.argv[0], self.package)] + [path if w == FILE else w for w in self.argv[1:]]


_KEYGEN = Checker("openssh-client", ("ssh-keygen", "-l", "-f", FILE), quiet=True, nonempty=True)

CHECKERS: dict[str, Checker] = {
    # check_sshd and check_nginx are shell functions of templates/converge.sh.j2: they build the
    # candidate config tree (live files, the staged ones over them) the daemon checks as a whole.
    "sshd": Checker("openssh-server", shell="check_sshd"),
    "sudoers": Checker("sudo", ("visudo", "-c", "-q", "-f", FILE)),
    "nftables": Checker("nftables", ("nft", "-c", "-f", FILE)),
    "apt": Checker("apt", ("apt-config", "-c", FILE, "dump"), quiet=True),
    "shell": Checker("dash", ("sh", "-n", FILE)),
    "authorized_keys": _KEYGEN,
    "known_hosts": _KEYGEN,
    # wg-quick reads the interface name from the file name: the staged copy is named wg0.conf.
    "wireguard": Checker(
        "wireguard-tools",
        shell='mkdir -p "$STAGE/wg" && cp -p "$2" "$STAGE/wg/wg0.conf" && wg-quick strip "$STAGE/wg/wg0.conf" >/dev/null',
    ),
    "named-checkconf": Checker("bind9-utils", ("named-checkconf", FILE)),
    "nginx": Checker("nginx", shell="check_nginx"),
    "borgmatic": Checker("borgmatic", ("validate-borgmatic-config", "-c", FILE), quiet=True),
    "ssh_private_key": Checker("openssh-client", ("ssh-keygen", "-y", "-f", FILE), quiet=True),
    "json": Checker("python3", ("python3", "-m", "json.tool", FILE), quiet=True),
    "python": Checker(
        "python3", ("python3", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])", FILE)
    ),
    "promtool-config": Checker("prometheus", ("promtool", "check", "config", "--syntax-only", FILE), quiet=True),
    "promtool-rules": Checker("prometheus", ("promtool", "check", "rules", FILE), quiet=True),
    "promtool-web": Checker("prometheus", ("promtool", "check", "web-config", FILE), quiet=True),
    "amtool": Checker("prometheus-alertmanager", ("amtool", "check-config", FILE), quiet=True),
    # mtail compiles a directory of programs: check_mtail (templates/converge.sh.j2) gives it this one alone.
    "mtail": Checker("mtail", shell='check_mtail "$2"'),
    # The exporter logs its own success at level=info on stderr: only other lines are shown.
    "blackbox": Checker(
        "prometheus-blackbox-exporter",
        shell='prometheus-blackbox-exporter --config.check --config.file="$2" 2>"$STAGE/blackbox.log" '
        '|| { grep -v level=info "$STAGE/blackbox.log" >&2; false; }',
    ),
    # check_postfix and check_opendkim (templates/converge.sh.j2): Postfix checks a candidate
    # /etc/postfix as a whole, OpenDKIM its config pointed at the staged key (render/roles/mail.py).
    "postfix": Checker("postfix", shell="check_postfix"),
    "opendkim": Checker("opendkim", shell='check_opendkim "$2"'),
    "private_key": Checker("openssl", ("openssl", "pkey", "-noout", "-in", FILE)),
    # The zone's name is its $ORIGIN line (render/roles/dns.py writes one first).
    "named-checkzone": Checker(
        "bind9-utils",
        shell='origin=$(awk \'$1 == "$ORIGIN" { sub(/\\.$/, "", $2); print $2; exit }\' "$2")\n'
        'named-checkzone -q -k fail -m fail -M fail -n fail -S fail -i local "$origin" "$2"',
    ),
}


def check_cases() -> str:
    """The case arms of the template's `check()`, one per checker, in the table's order."""
    arms = []
    for name, c in CHECKERS.items():
        body = c.case_body()
        if "\n" in body:
            arms.append(f"\t{name})\n" + "".join(f"\t\t{line}\n" for line in body.split("\n")) + "\t\t;;")
        else:
            arms.append(f"\t{name}) {body} ;;")
    return "\n".join(arms)


def check_name(name: Optional[str], path: str) -> None:
    """Refuses a `check=` the converge would not know (found at render time, not on the host)."""
    if name is not None and name not in CHECKERS:
        raise ValueError(f"{path}: unknown checker {name!r}; render/wire.py CHECKERS has {', '.join(sorted(CHECKERS))}")


# --- the stage call --------------------------------------------------------------------------------

HEREDOC = "HYPHA_EOF"
NONE = "-"
"""A header field with no value (no unit, no checker)."""


def _b64(text: str) -> str:
    """76-column lines, as base64(1) writes and reads them."""
    return base64.encodebytes(text.encode()).decode().rstrip("\n")


def _b64line(text: str) -> str:
    """One line, for the pieces of a file with late values (stage() decodes line by line)."""
    return base64.b64encode(text.encode()).decode()


def stage_call(index: int, f) -> str:
    """The stage call of ManagedFile `f` as `index`, header and heredoc, without a final newline.

    The heredoc delimiter cannot occur in base64, so no content ends it early; paths and names are
    shell-quoted words.
    """
    fields = [str(index), f.path, f.mode, f.owner, f.group, f.unit or NONE, f.action, f.check or NONE]
    if any("\x00" in x for x in fields):  # as render.quote.sh: no shell word can hold a NUL
        raise ValueError(f"a NUL byte cannot go into a shell word: {f.path[:40]!r}")
    header = "stage " + " ".join(shlex.quote(x) for x in fields) + f" <<'{HEREDOC}'"
    if f.late:
        body = [late_token(p) if is_late else _b64line(p) for is_late, p in f.pieces()]
        return "\n".join([f"PIECES=1 {header}", *body, HEREDOC])
    return "\n".join([header, _b64(f.content), HEREDOC])


@dataclass(frozen=True)
class Stage:
    """One stage call read back out of a script (rendered, or filled with the late values)."""

    index: int
    path: str
    mode: str
    owner: str
    group: str
    unit: Optional[str]
    action: str
    check: Optional[str]
    pieces: tuple[tuple[bool, str], ...]
    """(is_late, name) for a placeholder still unfilled, else (False, decoded text), in order."""
    span: tuple[int, int] = field(default=(0, 0), compare=False)
    """Where the call (header to closing delimiter) sits in the script, to edit it (tests)."""

    def content(self, late_value: Callable[[str], str] = late) -> str:
        """The file's text; each unfilled late value as `late_value(name)` (by default its content mark)."""
        return "".join(late_value(p) if is_late else p for is_late, p in self.pieces)


_STAGE = re.compile(rf"^(PIECES=1 )?stage (\d+ .*?) <<'{HEREDOC}'\n(.*?)\n{HEREDOC}$", re.M | re.S)


def _decode(text: str) -> str:
    """Base64 to text; what is not base64 (a tampered script) reads as empty text."""
    try:
        return base64.b64decode(text.replace("\n", ""), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def parse_stages(script: str) -> list[Stage]:
    """Every stage call of a converge script, in order. Missing trailing header fields read as defaults."""
    out = []
    for m in _STAGE.finditer(script):
        pieces, header, body = m.group(1), m.group(2), m.group(3)
        try:
            fields = shlex.split(header)
        except ValueError:
            continue
        if len(fields) < 5:
            continue
        index, path, mode, owner, group, *rest = fields
        unit, action, check = (rest + [NONE, "reload", NONE][len(rest):])[:3]
        if pieces:
            parts = []
            for line in body.split("\n"):
                name = LATE_PLACEHOLDER.fullmatch(line)
                parts.append((True, name.group(1)) if name else (False, _decode(line)))
        else:
            parts = [(False, _decode(body))]
        out.append(Stage(int(index), path, mode, owner, group, None if unit == NONE else unit, action,
                         None if check == NONE else check, tuple(parts), m.span()))
    return out
