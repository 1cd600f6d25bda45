"""The one writer per output format for values that land in a file a daemon or a shell reads.

Validation (model/) decides what a value may be; these writers make sure that whatever it lets
through means only itself where it lands (defence in depth): a shell word, a systemd argument, an
nginx string, an authorized_keys option, a known_hosts line, a YAML scalar, a comment. A value a
format cannot hold at all (a newline in a one-line setting, a `$` in an nginx string) raises
QuoteError, never reaches the file half-written. Plain words come out unchanged, so files whose
values are already safe keep their bytes (and their hashes, so converged hosts are not touched).

Every template uses these through the Jinja filters of render/templates.py; tests/test_quoting.py
holds the lint that fails a template pasting a value into shell or a unit without one of them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from functools import lru_cache
from typing import Iterable

import yaml

from .wire import LATE_MARK


class QuoteError(ValueError):
    """A value its target format cannot hold; the message names the format and a short prefix."""

    value: str = ""
    """The whole value the writer was given."""


def _show(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:60] + "…")


def _refuse(value: str, why: str) -> QuoteError:
    exc = QuoteError(f"{_show(value)}: {why}")
    exc.value = value
    return exc


@lru_cache(maxsize=None)
def _controls(allow: str) -> "re.Pattern[str]":
    """C0 controls and DEL, less `allow`, as one character class: one regex scan per value, which
    matters for 100,000 shortlinks (a per-character loop cost a fifth of their render)."""
    chars = "".join(chr(c) for c in [*range(0x20), 0x7F] if chr(c) not in allow)
    return re.compile(f"[{re.escape(chars)}]")


def _no_controls(value: str, where: str, allow: str = "") -> str:
    bad = _controls(allow).search(value)
    if bad:
        raise _refuse(value, f"control character {bad.group()!r} cannot go into {where}")
    return value


class Shell(str):
    """Text that already is shell code, built only from constants and `sh()`-quoted values.

    The converge template pastes prepare/finish/derive steps as code; its `shell_code` filter
    takes nothing but this type, so a step made with a bare f-string fails at render time.
    """


# --- POSIX sh -------------------------------------------------------------------------------------


def sh(value) -> str:
    """One shell word meaning exactly `value` (single quotes when needed; plain words unchanged).

    Newlines are fine inside single quotes; NUL is not representable in a shell string at all.
    """
    text = str(value)
    if "\x00" in text:
        raise _refuse(text, "a NUL byte cannot go into a shell word")
    return shlex.quote(text)


def sh_join(words: Iterable) -> Shell:
    """A command line of quoted words."""
    return Shell(" ".join(sh(w) for w in words))


def shell_code(value) -> Shell:
    """The `shell_code` filter: only Shell values (or empty) may be pasted into a script as code."""
    if value in ("", None):
        return Shell("")
    if not isinstance(value, Shell):
        raise TypeError(
            f"shell code must be a render.quote.Shell built with quote.sh(), not a bare {type(value).__name__}: "
            f"{_show(str(value))}"
        )
    return value


def join_shell(steps: Iterable) -> Shell:
    """Several Shell steps, one after the other (empty ones dropped)."""
    return Shell("\n".join(shell_code(s) for s in steps if s))


def comment(value) -> str:
    """Text inside a `#` comment of any format: a newline would end the comment, so none is allowed."""
    return _no_controls(str(value), "a one-line comment", allow="\t")


# --- systemd unit files ---------------------------------------------------------------------------

_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def _systemd_quoted(text: str) -> str:
    # systemd's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) reads C escapes inside "...".
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def systemd_arg(value) -> str:
    """One ExecStart= argument: `%` specifiers and `$` variables escaped (`%%`, `$$`), quoted when needed."""
    text = _no_controls(str(value), "an ExecStart= argument", allow="\n\r\t")
    if text == "":
        return '""'
    text = text.replace("%", "%%").replace("$", "$$")
    return text if _SYSTEMD_PLAIN.fullmatch(text) else _systemd_quoted(text)


def systemd_value(value) -> str:
    """The value of a one-line unit setting (Description=, OnCalendar=, …): specifiers escaped, one line.

    A trailing backslash would join the next line to this setting, so that is refused as well.
    """
    text = _no_controls(str(value), "a systemd unit setting", allow="\t")
    if text.endswith("\\"):
        raise _refuse(text, "a trailing backslash continues a systemd setting onto the next line")
    return text.replace("%", "%%")


def systemd_env(value, name: str) -> str:
    """One Environment= assignment NAME=value (systemd quoting and C escapes; `%` escaped)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise _refuse(name, "not an environment variable name")
    text = _no_controls(str(value), "an Environment= value", allow="\n\r\t").replace("%", "%%")
    pair = f"{name}={text}"
    return pair if _SYSTEMD_PLAIN.fullmatch(pair) else _systemd_quoted(pair)


# --- nginx ----------------------------------------------------------------------------------------

_NGINX_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+=,*-]+")


def nginx_quote(value: str) -> str:
    """`value` as one double-quoted nginx string that means exactly `value`.

    `"` and `\\` are escaped; `$` (nginx expands variables in quoted strings and has no escape for
    `$`) and control characters (a newline would end the Location header) are refused.
    """
    if "$" in value:
        raise _refuse(value, "nginx cannot hold a literal '$' in a string; write it as %24")
    _no_controls(value, "nginx config")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_str(value) -> str:
    """One nginx directive argument: plain when it is a plain word, else nginx_quote's string.

    A word starting `~` would be a regex in server_name/location, so it is quoted too.
    """
    text = str(value)
    if _NGINX_PLAIN.fullmatch(text) and not text.startswith("~"):
        return text
    return nginx_quote(text)


# --- sshd_config --------------------------------------------------------------------------------

_SSHD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def sshd_name(value) -> str:
    """One user or group name in an sshd_config list (AllowUsers): in sshd these are patterns
    (`*`, `?`, `!`, `user@host`) split at whitespace and `#` starts a comment, so only a plain name."""
    text = str(value)
    if not _SSHD_NAME.fullmatch(text):
        raise _refuse(text, "an sshd_config user list takes plain names only (no patterns, spaces or quotes)")
    return text


# --- OpenSSH key files ----------------------------------------------------------------------------

_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*")
_PUBLIC_KEY = re.compile(r"(?:sk-)?(?:ssh|ecdsa)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}(?: [^\r\n\x00]*)?")


def authorized_keys_option(name: str, value=None) -> str:
    """One option of an authorized_keys line: `name` or `name="value"`.

    sshd's auth-options.c opt_dequote() reads `\\"` as a quote and every other byte as itself, and
    a line ends the entry: so `"` is escaped, a newline or NUL refused.
    """
    if not _OPTION_NAME.fullmatch(name):
        raise _refuse(name, "not an authorized_keys option name")
    if value is None:
        return name
    text = _no_controls(str(value), "an authorized_keys option", allow="\t")
    if text.endswith("\\"):
        # `\"` at the end would escape the closing quote.
        raise _refuse(text, "an authorized_keys option value cannot end in a backslash")
    return f'{name}="' + text.replace('"', '\\"') + '"'


# A late value's placeholder (render.plan.late): the key Pulumi makes, checked when it is filled in.
_LATE = LATE_MARK


def public_key(value) -> str:
    """An OpenSSH public key line `type base64 [comment]`, one line (anything else is refused)."""
    text = str(value)
    if not (_PUBLIC_KEY.fullmatch(text) or _LATE.fullmatch(text)):
        raise _refuse(text, "not one OpenSSH public key line (type, base64, optional comment)")
    return text


def authorized_keys_line(key, options: Iterable[str] = ()) -> str:
    """One authorized_keys entry: options (from authorized_keys_option) then the key, no newline."""
    opts = ",".join(options)
    line = f"{opts} {public_key(key)}" if opts else public_key(key)
    return line


_KNOWN_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def known_hosts_line(host, port: int, key) -> str:
    """One known_hosts line pinning `key` for exactly `host` (and port).

    known_hosts has no quoting: `,` separates names, `*`/`?` are wildcards, `!` negates, `@` starts
    a marker, `|` a hashed name, whitespace ends the field. So the host must be a plain DNS name or
    an IP address, and the key one line.
    """
    text = str(host)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _KNOWN_HOST.fullmatch(text):
            raise _refuse(text, "a known_hosts line needs a plain host name or address") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise _refuse(repr(port), "not a TCP port")
    where = text if port == 22 else f"[{text}]:{port}"
    return f"{where} {public_key(key)}"


# --- borgmatic ------------------------------------------------------------------------------------

# borgmatic 1.7 expands ${NAME}, ${NAME-default} and ${NAME:-default} in every config string and
# reads a backslash right before one as "literal" (borgmatic/config/environment.py, 1.7.7).
_BORGMATIC_VARIABLE = re.compile(r"\\?\$\{[A-Za-z0-9_]+(?::?-[^}]+)?\}")


def borgmatic_str(value) -> str:
    """A string in a borgmatic config that borgmatic reads back as itself: every `${...}` it would
    expand gets the escaping backslash (one more before an already escaped one), then JSON quoting."""
    text = _BORGMATIC_VARIABLE.sub(lambda m: "\\" + m.group(0), str(value))
    return json.dumps(text, ensure_ascii=False)


def borgmatic_word(value) -> str:
    """A value borgmatic 1.7 pastes unquoted into a shell command (a database name: hooks/postgresql.py
    runs pg_dump with shell=True, the name and its dump path as bare words): a plain word or refused."""
    text = str(value)
    if not text or sh(text) != text:
        raise _refuse(text, "borgmatic pastes this into a shell command unquoted; only a plain word can go there")
    return borgmatic_str(text)


# --- YAML -----------------------------------------------------------------------------------------

_YAML_PLAIN = re.compile(r"[A-Za-z0-9_./@+-](?:[A-Za-z0-9_./@+ -]*[A-Za-z0-9_./@+-])?")


def yaml_value(value) -> str:
    """A string as a YAML scalar: plain when YAML reads the plain word back as this very string,
    else JSON's double-quoted form (JSON is YAML)."""
    text = str(value)
    if _YAML_PLAIN.fullmatch(text):
        try:
            if yaml.safe_load(text) == text:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


# --- mtail programs ---------------------------------------------------------------------------------

_MTAIL_PLAIN = re.compile(r"[A-Za-z0-9._:-]+")


def mtail_str(value) -> str:
    """A double-quoted mtail string literal. mtail's lexer has escapes only for a few characters, so
    this takes plain words alone (DNS names, ports); anything else is refused, not escaped."""
    text = str(value)
    if not _MTAIL_PLAIN.fullmatch(text):
        raise _refuse(text, "an mtail string here holds letters, digits, `.`, `_`, `:` and `-` only")
    return f'"{text}"'


# --- Postfix ----------------------------------------------------------------------------------------

# What a Postfix main.cf value, map key or alias target may hold unquoted: postconf reads `$` as
# expansion, `,` and whitespace as list separators, `#` at a line's start as a comment, and the
# aliases(5) reader treats `"`, `|`, `:` and `/` specially. The model allows nothing else in the
# names and addresses that land here, so anything outside this set is refused, not escaped.
_POSTFIX_WORD = re.compile(r"[A-Za-z0-9[][A-Za-z0-9._+@\[\]:/-]*")


def postfix_word(value) -> str:
    """A name, address or network as one Postfix config or lookup-table word, or refused."""
    text = str(value)
    if not _POSTFIX_WORD.fullmatch(text):
        raise _refuse(text, "cannot go into a Postfix config or table as one word")
    return text
