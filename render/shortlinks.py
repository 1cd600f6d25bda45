"""The link shortener: `shortlinks.csv`, checked line by line, into the nginx config serving its redirects.

Members edit `shortlinks.csv` (header `keyword,destination_url`) by pull request. Every problem in
the file is collected and raised together as one `ShortlinksError` (a `model.errors.ConfigError`),
each as `shortlinks.csv:<line>: <what is wrong and what to change>`, so a bad file deploys nothing.

Decisions, so the file and the redirects behave the same for everyone:

- Keywords are matched ignoring case and stored in lower case. Allowed: a-z, 0-9, `-` and `_`,
  starting with a letter or digit, at most 44 characters (what nginx's map accepts, MAX_KEYWORD). No `.` or `/`, so a keyword can never
  shadow `/.well-known/` (ACME) or a path with more segments.
- Whitespace is never trimmed: a space before or after a keyword or URL, or inside a URL, is an
  error. Nobody sees a trailing space in a pull request diff, so the file must mean exactly what
  it shows; the message says what to delete (or to write a space in a URL as `%20`).
- A destination is an absolute `http://` or `https://` URL with a host and no user name or password,
  made only of characters a URL may hold (RFC 3986): anything else would have to be guessed at or
  escaped. `$` is refused too (nginx reads it as a variable and has no escape for it; write `%24`).
- A destination on the shortener itself (`https://link.<domain>/<keyword>`, any case) is an alias:
  the rendered map sends it straight to the final destination, through chains of aliases; a loop or
  an alias to a keyword that does not exist is an error.
- The map key is nginx's `$uri` (the decoded path, without the query string). nginx compares map
  string keys ignoring case, so `/LoomIO` finds `/loomio`; each keyword has a second key with a
  trailing slash, so `/loomio/` works too. Exact keys keep the lookup a hash, not a regex list.
- Redirects are `302 Found`: links are edited, and browsers keep a 301/308 forever, so a changed
  link would never reach people who had used it once. (307 would add nothing for GET requests.)
- An unknown keyword gets `404` with a short plain-text page saying how to request a link: a typo
  must fail visibly (a redirect to an index page would look like success to people and to link
  checkers), and plain text from nginx needs no extra files and no HTML escaping.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union
from urllib.parse import urlsplit

from model.errors import ConfigError, Problem, read_bytes, utf8_error

from .quote import nginx_quote  # the one nginx string writer (render/quote.py)
from .templates import render

ROOT = Path(__file__).resolve().parent.parent
CSV_PATH = ROOT / "shortlinks.csv"
SOURCE = "shortlinks.csv"
HEADER = ("keyword", "destination_url")
REDIRECT_STATUS = 302
UNKNOWN_STATUS = 404
# nginx stores each map key in a hash bucket of map_hash_bucket_size bytes, by default the CPU's
# cache line: 64 on x86-64 (ngx_http_map_module.c sets it to ngx_cacheline_size when unset). One
# element takes sizeof(void *) + align(len(key) + 2, 8) bytes and a bucket ends with a NULL pointer
# (NGX_HASH_ELT_SIZE in src/core/ngx_hash.h), so with the 8-byte value pointer a key of at most 46
# bytes fits. Our longest key is `/<keyword>/`: 44 characters. Raising the bucket size instead
# would need the directive before the first `map` of the http block (conf.d/hypha.conf has one; a
# second setting is "duplicate"), and a link short enough to type needs no more than 44 anyway.
# tests/test_shortlinks.py runs the real `nginx -t` with a 44- and a 45-character keyword.
MAX_KEYWORD = 44
MAX_FILE_BYTES = 16 * 1024 * 1024
"""A 100,000-row file is about 6 MB; beyond this the file is refused by name, with its size."""
TEMPLATE = "reverse_proxy/shortlinks.conf.j2"
MAP_FILE = "/etc/nginx/conf.d/shortlinks-map.conf"
"""Where the map goes: Debian's nginx.conf includes conf.d/*.conf in the http context."""
LOCATION_FILE = "/etc/nginx/snippets/shortlinks-location.conf"
"""Where the location goes: `include` it inside the server block for `link.<domain>`."""

KEYWORD_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
HOST_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
# Characters a URL may hold as written (RFC 3986 unreserved, reserved and `%`), less `$`.
# Schemes written without `//` that must be named as such rather than called "not absolute".
OTHER_SCHEMES = frozenset({"javascript", "data", "mailto", "tel", "sms", "vbscript", "file", "about", "blob"})
URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!&'()*+,;=%")
_URL_CHARS_ONLY = re.compile("[" + re.escape("".join(sorted(URL_CHARS))) + "]*\\Z")
_WHITESPACE = re.compile(r"\s")  # str.isspace()'s set: sre uses the same Unicode table


@dataclass(frozen=True)
class Link:
    keyword: str
    """Lower case."""
    destination: str
    """As written in the file."""
    line: int
    alias_of: Optional[str] = None
    """The keyword this link points at when its destination is the shortener itself."""


class ShortlinksError(ConfigError):
    """Every problem in the shortlinks file, ordered by line; raised before anything is rendered."""

    def __init__(self, problems: list[Problem], source: str = SOURCE):
        # Not ConfigError.__init__: that sorts paths as text (line 10 before line 2) and names a stack.
        self.stack = None
        self.source = source
        self.problems = sorted(set(problems), key=lambda p: (_line_of(p), p.message))
        lines = "\n".join(f"  - {p}" for p in self.problems)
        ValueError.__init__(
            self, f"{source}: {len(self.problems)} problem(s) in the short links; nothing was deployed:\n{lines}"
        )


def _line_of(problem: Problem) -> int:
    tail = problem.path.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _hosts(shortener_host: Union[str, Iterable[str]]) -> frozenset[str]:
    hosts = [shortener_host] if isinstance(shortener_host, str) else list(shortener_host)
    return frozenset(h.lower().rstrip(".") for h in hosts)


def _percent(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode())


def _show(ch: str) -> str:
    return repr(ch) if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"


def _keyword_problems(raw: str) -> list[str]:
    if raw == "":
        return ["keyword is empty; write the short name people type after link.<domain>/, e.g. `handbook`"]
    if raw != raw.strip():
        where = " and ".join(
            w for w, bad in (("before", raw[:1].isspace()), ("after", raw[-1:].isspace())) if bad
        )
        return [f"keyword {raw!r} has stray whitespace {where} it; delete the space(s)"]
    word = raw.lower()
    if not KEYWORD_RE.match(word):
        return [
            f"keyword {raw!r} may only hold letters a-z, digits, '-' and '_', starting with a letter or digit "
            "(upper case is read as lower case); rename it"
        ]
    if len(word) > MAX_KEYWORD:
        return [f"keyword {raw!r} is {len(word)} characters long; shorten it to at most {MAX_KEYWORD}"]
    return []


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].split("%")[0])
            return host.endswith("]")
        except ValueError:
            return False
    labels = host.rstrip(".").split(".")
    return bool(labels) and all(HOST_LABEL_RE.match(label) for label in labels)


def _url_problems(raw: str) -> list[str]:
    if raw == "":
        return ["destination_url is empty; write the full address, e.g. https://hypha.coop/"]
    if raw != raw.strip():
        where = " and ".join(
            w for w, bad in (("before", raw[:1].isspace()), ("after", raw[-1:].isspace())) if bad
        )
        return [f"destination_url {raw!r} has stray whitespace {where} it; delete the space(s)"]
    problems = []
    # One regex pass for the common case of a clean URL, not a Python loop per character:
    # 100,000 rows in ≤ 2 s (bench/load_scale.py).
    if _URL_CHARS_ONLY.match(raw):
        bad = []
    else:
        if _WHITESPACE.search(raw):
            problems.append(f"destination_url {raw!r} has whitespace inside it; write a space as %20")
        bad = sorted(c for c in set(raw) - URL_CHARS if not c.isspace())
    if "$" in bad:
        problems.append(
            f"destination_url {raw!r} holds '$', which nginx would read as a variable; write it as %24"
        )
        bad.remove("$")
    if bad:
        fixes = ", ".join(f"{_show(c)} as {_percent(c)}" for c in bad)
        problems.append(
            f"destination_url {raw!r} holds characters a URL may not contain as written; percent-encode them: {fixes}"
            + (" (write a non-ASCII host name in its xn-- form)" if any(ord(c) > 127 for c in bad) else "")
        )
    try:
        parts = urlsplit(raw)
        parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        return problems + [f"destination_url {raw!r} is not a valid URL ({exc}); correct it"]
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") and "://" not in raw and scheme not in OTHER_SCHEMES:
        # No scheme (`/path`, `hypha.coop/x`), or urlsplit took a host for one (`hypha.coop:80/x`).
        return problems + [
            f"destination_url {raw!r} is not an absolute URL; write the full address starting with https://"
        ]
    if scheme not in ("http", "https"):
        return problems + [
            f"destination_url {raw!r} uses {scheme}:, which a browser redirect must not follow; "
            "only https:// (or http://) addresses can be short links"
        ]
    if not raw.lower().startswith(f"{scheme}://") or not parts.hostname:
        return problems + [
            f"destination_url {raw!r} has no host name; write it as {scheme}://<host>/<path>"
        ]
    if parts.username is not None or parts.password is not None:
        problems.append(
            f"destination_url {raw!r} holds a user name or password before '@'; remove it "
            "(this file is public, and such URLs are a common way to disguise the real host)"
        )
    elif not _valid_host(re.sub(r":[0-9]*\Z", "", parts.netloc.lower())):
        problems.append(f"destination_url {raw!r} has an invalid host name {parts.hostname!r}; correct it")
    return problems


def _alias_target(raw: str, hosts: frozenset[str]) -> tuple[Optional[str], Optional[str]]:
    """(keyword, None) when `raw` points at a keyword on the shortener; (None, problem) when it
    points at the shortener but not at one keyword; (None, None) otherwise."""
    parts = urlsplit(raw)
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme.lower() not in ("http", "https") or host not in hosts:
        return None, None
    word = parts.path.lower()[1:]
    if word.endswith("/"):
        word = word[:-1]
    if parts.query or parts.fragment or not parts.path.startswith("/") or not KEYWORD_RE.match(word):
        return None, (
            f"destination_url {raw!r} points at the shortener {host} but not at one keyword; "
            f"write https://{host}/<keyword> (no query or fragment) or the final destination"
        )
    return word, None


def parse(
    text: str, source: str = SOURCE, *, shortener_host: Union[str, Iterable[str]]
) -> list[Link]:
    """The links in `text` (a shortlinks.csv), in file order; raises ShortlinksError listing every problem.

    `shortener_host` is the shortener's own host name (`link.<domain>`), or several (staging may
    also accept aliases written against prod's); a destination there is an alias.
    """
    problems: list[Problem] = []

    def report(line: int, message: str) -> None:
        problems.append(Problem(f"{source}:{line}", message))

    hosts = _hosts(shortener_host)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header_line = ",".join(HEADER)
    links: list[Link] = []
    first_line: dict[str, int] = {}  # keyword -> first line it appears on, valid destination or not
    seen_header = False
    line_end = 0
    while True:
        start = line_end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            line_end = reader.line_num
            report(
                start,
                f"the line cannot be read as CSV ({exc}); a field with a comma or a double quote must be "
                'wrapped in double quotes, with each " inside written as ""',
            )
            if "unexpected end of data" in str(exc):
                break
            continue
        line_end = reader.line_num
        if not seen_header:
            seen_header = True
            if tuple(row) != HEADER:
                found = ",".join(row)
                bom = " (the file starts with a byte order mark; save it as UTF-8 without BOM)" if found.startswith("\ufeff") else ""
                report(
                    start,
                    f"the first line must be exactly the header `{header_line}`, found `{found}`{bom}; "
                    f"make line 1 `{header_line}`",
                )
            continue
        if not row:
            continue  # a blank line carries no meaning
        if len(row) != 2:
            hint = (
                "put a comma between the keyword and the URL"
                if len(row) < 2
                else "if the URL holds a comma, wrap the URL in double quotes; otherwise delete the extra field(s)"
            )
            report(start, f"has {len(row)} field(s), expected 2 (`{header_line}`); {hint}")
            continue
        raw_keyword, raw_url = row
        keyword_problems = _keyword_problems(raw_keyword)
        url_problems = _url_problems(raw_url)
        for message in keyword_problems + url_problems:
            report(start, message)
        if keyword_problems:
            continue
        keyword = raw_keyword.lower()
        if keyword in first_line:
            same = "" if raw_keyword == keyword else f" (as {raw_keyword!r}; keywords ignore case)"
            report(
                start,
                f"keyword {keyword!r} is defined twice, on lines {first_line[keyword]} and {start}{same}; "
                "delete or rename one of them",
            )
            continue
        first_line[keyword] = start
        if url_problems:
            continue
        alias, problem = _alias_target(raw_url, hosts)
        if problem:
            report(start, problem)
            continue
        links.append(Link(keyword, raw_url, start, alias))
    if not seen_header:
        report(1, f"the file is empty; its first line must be the header `{header_line}`")
    problems += _alias_problems(links, source, set(first_line))
    if problems:
        raise ShortlinksError(problems, source)
    return links


def _alias_problems(links: list[Link], source: str, known: set[str]) -> list[Problem]:
    """Aliases to keywords that do not exist (`known` holds every keyword the file defines, valid or
    not, so a broken line is reported once, not again by the aliases to it) and loops of aliases."""
    by_keyword = {link.keyword: link for link in links}
    problems = []
    for link in links:
        if link.alias_of is not None and link.alias_of not in known:
            problems.append(
                Problem(
                    f"{source}:{link.line}",
                    f"keyword {link.keyword!r} points at {link.destination}, but there is no keyword "
                    f"{link.alias_of!r}; add that keyword or write the final destination instead",
                )
            )
    state: dict[str, int] = {}  # 1: on the current walk, 2: finished
    for start in links:
        walk: list[Link] = []
        on_walk: dict[str, int] = {}  # keyword -> its index in `walk`: the loop is found in O(1)
        link: Optional[Link] = start
        while link is not None and state.get(link.keyword) is None:
            state[link.keyword] = 1
            on_walk[link.keyword] = len(walk)
            walk.append(link)
            link = by_keyword.get(link.alias_of) if link.alias_of else None
        if link is not None and state[link.keyword] == 1:
            loop = walk[on_walk[link.keyword] :]
            first = min(loop, key=lambda l: l.line)
            if len(loop) == 1:
                message = (
                    f"keyword {first.keyword!r} points at itself ({first.destination}); "
                    "write the final destination instead"
                )
            else:
                at = loop.index(first)
                ordered = loop[at:] + loop[:at]
                chain = " -> ".join(f"{l.keyword} (line {l.line})" for l in ordered[:10])
                more = f" -> ... ({len(ordered) - 10} more)" if len(ordered) > 10 else ""
                message = (
                    f"aliases form a loop: {chain}{more} -> {first.keyword}; point one of them at a real destination instead"
                )
            problems.append(Problem(f"{source}:{first.line}", message))
        for l in walk:
            state[l.keyword] = 2
    return problems


def load(path: Path = CSV_PATH, *, shortener_host: Union[str, Iterable[str]]) -> list[Link]:
    """The links in the repository's shortlinks.csv (or `path`); raises ShortlinksError."""
    return parse(read(path), path.name, shortener_host=shortener_host)


def read(path: Path = CSV_PATH, limit: int = MAX_FILE_BYTES) -> str:
    """The file as text, or a ShortlinksError naming `file:line`: over `limit` bytes, not UTF-8,
    a byte order mark, or a NUL (csv would stop at it or drop it)."""
    data, problem = read_bytes(path, limit)
    if problem:
        raise ShortlinksError([Problem(f"{path.name}:1", problem)], path.name)
    return decode(data, path.name)


def decode(data: bytes, source: str = SOURCE) -> str:
    """UTF-8 without BOM, no NUL; CRLF line ends are fine (csv reads them as one line end)."""
    problems = []
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append(Problem(f"{source}:1", "the file starts with a byte order mark; save it as UTF-8 without BOM"))
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column, message = utf8_error(data, exc)
        raise ShortlinksError(problems + [Problem(f"{source}:{line}", f"column {column}: {message}")], source) from None
    at = text.find("\0")
    if at >= 0:
        problems.append(Problem(f"{source}:{text.count(chr(10), 0, at) + 1}", "holds a NUL character; delete it"))
    if problems:
        raise ShortlinksError(problems, source)
    return text


def resolve(links: list[Link], source: str = SOURCE) -> dict[str, str]:
    """Keyword -> final destination, every alias followed to the end of its chain."""
    problems = _alias_problems(links, source, {link.keyword for link in links})
    if problems:
        raise ShortlinksError(problems, source)
    by_keyword = {link.keyword: link for link in links}
    final: dict[str, str] = {}
    for link in links:
        # Follow the chain only as far as a keyword already resolved, then fill the walk in: every
        # link is walked once, so a 100,000-alias chain costs 100,000 steps, not 100,000² / 2.
        walk = []
        end = link
        while end.alias_of is not None and end.keyword not in final:
            walk.append(end.keyword)
            end = by_keyword[end.alias_of]
        destination = final.get(end.keyword, end.destination)
        for keyword in walk:
            final[keyword] = destination
        final[end.keyword] = destination
    return {link.keyword: final[link.keyword] for link in links}


def render_map(links: list[Link], source: str = SOURCE) -> str:
    """The http-context file: `map $uri $shortlink_target`, sorted by keyword, aliases resolved."""
    final = resolve(links, source)
    by_keyword = {link.keyword: link for link in links}
    width = max((len(k) for k in final), default=0) + 2
    entries = []
    for keyword in sorted(final):
        value = nginx_quote(final[keyword])
        link = by_keyword[keyword]
        note = f"  # alias of {link.alias_of}" if link.alias_of else ""
        for key in (f"/{keyword}", f"/{keyword}/"):
            entries.append(f"{key.ljust(width)} {value};{note}")
    return render(TEMPLATE, part="map", source=source, count=len(final), entries=entries)


def render_location(shortener_host: str) -> str:
    """The server-context snippet for `link.<domain>`: the redirect, or the 404 help page."""
    return render(
        TEMPLATE,
        part="location",
        redirect_status=REDIRECT_STATUS,
        unknown_status=UNKNOWN_STATUS,
        host=nginx_quote(shortener_host)[1:-1],
    )


def retired_problems(links: list[Link], retired: dict, source: str = SOURCE) -> list[Problem]:
    """Links whose destination is on a retired service's name (`retired`: domain -> (service,
    model.stack.Retired)), one problem per line: the link would send people through a redirect or
    into a 410, so the file must say where they should go now (or drop the link)."""
    problems = []
    for link in links:
        if link.alias_of is not None:
            continue
        host = (urlsplit(link.destination).hostname or "").lower().rstrip(".")
        if host not in retired:
            continue
        service, r = retired[host]
        now = f"answers 410 Gone" if r.redirect is None else f"redirects to {r.redirect}"
        fix = "remove the line" if r.redirect is None else f"point it at {r.redirect} (or where people should go now) or remove the line"
        problems.append(
            Problem(
                f"{source}:{link.line}",
                f"keyword {link.keyword!r} leads to {host}, a name of services.{service}, retired on "
                f"{r.date.isoformat()} (it {now}); {fix}",
            )
        )
    return problems


def check_retired(links: list[Link], retired: dict, source: str = SOURCE) -> list[Link]:
    """`links`, or a ShortlinksError when any leads to a retired service (retired_problems)."""
    problems = retired_problems(links, retired, source)
    if problems:
        raise ShortlinksError(problems, source)
    return links
