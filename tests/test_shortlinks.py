"""The link shortener: shortlinks.csv is refused line by line when wrong, and served by the real nginx when right."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from render import shortlinks
from render.shortlinks import Link, ShortlinksError, nginx_quote, parse, render_location, render_map
from model.errors import ConfigError

pytestmark = pytest.mark.files

HOST = "link.hypha.coop"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

GOOD = """\
keyword,destination_url
handbook,https://handbook.hypha.coop/
Loomio,https://loomio.hypha.coop/
vote,https://link.hypha.coop/loomio
agm,HTTPS://Link.Hypha.Coop/VOTE/
meet,https://meet.jit.si/hypha-coop-weekly

wiki,"https://wiki.example.org/a;b=c?x=1&y=2,3#top"
"""
FINAL = {
    "handbook": "https://handbook.hypha.coop/",
    "loomio": "https://loomio.hypha.coop/",
    "vote": "https://loomio.hypha.coop/",
    "agm": "https://loomio.hypha.coop/",
    "meet": "https://meet.jit.si/hypha-coop-weekly",
    "wiki": "https://wiki.example.org/a;b=c?x=1&y=2,3#top",
}
# A destination no row of the file can produce (parse refuses `"` and spaces): built by hand, it shows
# the rendering itself quotes values so that nothing in them can end the string or add a directive.
HOSTILE = Link("injected", 'https://example.org/a";} return 200 "owned', 99)


def refusal(text: str) -> ShortlinksError:
    with pytest.raises(ShortlinksError) as caught:
        parse(text, shortener_host=HOST)
    return caught.value


def messages_at(exc: ShortlinksError, line: int) -> list[str]:
    found = [p.message for p in exc.problems if p.path == f"shortlinks.csv:{line}"]
    assert found, f"no problem at shortlinks.csv:{line}; got:\n{exc}"
    return found


# --- good input -------------------------------------------------------------------------------


def test_the_good_csv_parses_into_lower_case_keywords_with_their_lines():
    links = parse(GOOD, shortener_host=HOST)
    assert [(link.keyword, link.line) for link in links] == [
        ("handbook", 2),
        ("loomio", 3),
        ("vote", 4),
        ("agm", 5),
        ("meet", 6),
        ("wiki", 8),
    ]
    assert {link.keyword: link.alias_of for link in links if link.alias_of} == {"vote": "loomio", "agm": "vote"}


def test_aliases_resolve_to_the_final_destination_through_chains():
    assert shortlinks.resolve(parse(GOOD, shortener_host=HOST)) == FINAL


def test_an_alias_to_a_second_shortener_host_resolves_too():
    text = "keyword,destination_url\nloomio,https://loomio.hypha.coop/\nvote,https://link.hypha.coop/loomio\n"
    links = parse(text, shortener_host=("link.staging.hypha.coop", HOST))
    assert shortlinks.resolve(links)["vote"] == "https://loomio.hypha.coop/"


def test_windows_line_endings_and_blank_lines_change_nothing():
    crlf = GOOD.replace("\n", "\r\n")
    assert [(l.keyword, l.destination) for l in parse(crlf, shortener_host=HOST)] == [
        (l.keyword, l.destination) for l in parse(GOOD, shortener_host=HOST)
    ]


def test_the_map_is_sorted_by_keyword_with_a_trailing_slash_key_each_and_aliases_resolved():
    text = render_map(parse(GOOD, shortener_host=HOST))
    entries = [line.split() for line in text.splitlines() if line.startswith("    /")]
    keys = [e[0] for e in entries]
    assert keys == [k for word in sorted(FINAL) for k in (f"/{word}", f"/{word}/")]
    assert entries[0][:2] == ["/agm", '"https://loomio.hypha.coop/";']
    assert "map $uri $shortlink_target {" in text and '    default "";' in text


def test_rendering_is_deterministic_whatever_the_row_order():
    header, *rows = GOOD.splitlines()
    shuffled = "\n".join([header, *reversed(rows)]) + "\n"
    assert render_map(parse(GOOD, shortener_host=HOST)) == render_map(parse(shuffled, shortener_host=HOST))


def test_the_repositorys_shortlinks_csv_parses_cleanly_and_renders():
    links = shortlinks.load(shortener_host=HOST)
    assert len(links) >= 5
    assert any(link.alias_of for link in links), "the real file should show members how an alias looks"
    assert shortlinks.CSV_PATH.read_text().splitlines()[0] == "keyword,destination_url"
    render_map(links)


def test_shortlinks_errors_are_config_errors_so_the_program_reports_them_like_any_other():
    exc = refusal("keyword,destination_url\nx,ftp://a/\n")
    assert isinstance(exc, ConfigError)
    assert str(exc).startswith("shortlinks.csv: 1 problem(s)")
    assert "  - shortlinks.csv:2: destination_url 'ftp://a/' uses ftp:" in str(exc)


# --- bad input: one case per rule, each names its line and the fix ---------------------------

HEADER = "keyword,destination_url\n"
ROWS = "handbook,https://handbook.hypha.coop/\nloomio,https://loomio.hypha.coop/\n"  # lines 2 and 3

BAD = [
    ("empty-file", "", 1, ("file is empty", "keyword,destination_url")),
    ("header-missing", ROWS, 1, ("first line must be exactly the header", "`keyword,destination_url`")),
    ("header-misspelt", "keyword,destination\n" + ROWS, 1, ("found `keyword,destination`", "make line 1")),
    ("header-with-space", "keyword, destination_url\n" + ROWS, 1, ("found `keyword, destination_url`",)),
    ("header-capitalised", "Keyword,Destination_URL\n" + ROWS, 1, ("exactly the header",)),
    ("header-with-byte-order-mark", "\ufeff" + HEADER + ROWS, 1, ("byte order mark", "without BOM")),
    ("duplicate-keyword", HEADER + ROWS + "handbook,https://x.example/\n", 4, ("defined twice", "lines 2 and 4", "delete or rename")),
    ("duplicate-keyword-in-other-case", HEADER + ROWS + "LOOMIO,https://x.example/\n", 4, ("lines 3 and 4", "ignore case")),
    ("keyword-with-dot", HEADER + ROWS + "a.b,https://x.example/\n", 4, ("'a.b'", "letters a-z, digits, '-' and '_'", "rename")),
    ("keyword-with-slash", HEADER + ROWS + "a/b,https://x.example/\n", 4, ("'a/b'", "rename")),
    ("keyword-with-inner-space", HEADER + ROWS + "a b,https://x.example/\n", 4, ("'a b'", "rename")),
    ("keyword-starting-with-dash", HEADER + ROWS + "-ab,https://x.example/\n", 4, ("starting with a letter or digit",)),
    ("keyword-too-long", HEADER + ROWS + "k" * 65 + ",https://x.example/\n", 4, ("65 characters", "at most 44")),
    ("keyword-empty", HEADER + ROWS + ",https://x.example/\n", 4, ("keyword is empty", "e.g. `handbook`")),
    ("keyword-leading-space", HEADER + ROWS + " meet,https://x.example/\n", 4, ("' meet'", "whitespace before", "delete the space")),
    ("keyword-trailing-space", HEADER + ROWS + "meet ,https://x.example/\n", 4, ("'meet '", "whitespace after", "delete the space")),
    ("url-empty", HEADER + ROWS + "meet,\n", 4, ("destination_url is empty", "https://")),
    ("url-leading-space", HEADER + ROWS + "meet, https://x.example/\n", 4, ("whitespace before", "delete the space")),
    ("url-trailing-space", HEADER + ROWS + "meet,https://x.example/ \n", 4, ("whitespace after", "delete the space")),
    ("url-trailing-tab", HEADER + ROWS + "meet,https://x.example/\t\n", 4, ("whitespace after",)),
    ("url-inner-space", HEADER + ROWS + "meet,https://x.example/a b\n", 4, ("whitespace inside", "%20")),
    ("url-ftp", HEADER + ROWS + "meet,ftp://x.example/f\n", 4, ("uses ftp:", "https://")),
    ("url-javascript", HEADER + ROWS + "meet,javascript:alert(1)\n", 4, ("uses javascript:", "https://")),
    ("url-mailto", HEADER + ROWS + "meet,mailto:info@hypha.coop\n", 4, ("uses mailto:",)),
    ("url-relative-path", HEADER + ROWS + "meet,/handbook\n", 4, ("not an absolute URL", "starting with https://")),
    ("url-without-scheme", HEADER + ROWS + "meet,meet.jit.si/hypha\n", 4, ("not an absolute URL",)),
    ("url-host-and-port-without-scheme", HEADER + ROWS + "meet,meet.jit.si:443/hypha\n", 4, ("not an absolute URL",)),
    ("url-without-host", HEADER + ROWS + "meet,https:///path\n", 4, ("no host name", "https://<host>/")),
    ("url-with-one-slash", HEADER + ROWS + "meet,https:/x.example/\n", 4, ("no host name",)),
    ("url-with-password", HEADER + ROWS + "meet,https://me:pw@x.example/\n", 4, ("user name or password", "remove it")),
    ("url-disguised-host", HEADER + ROWS + "meet,https://link.hypha.coop@evil.example/\n", 4, ("user name or password",)),
    ("url-bad-host", HEADER + ROWS + "meet,https://x_y.example/\n", 4, ("invalid host name",)),
    ("url-bad-port", HEADER + ROWS + "meet,https://x.example:99999/\n", 4, ("not a valid URL", "correct it")),
    ("url-double-quote", HEADER + ROWS + 'meet,"https://x.example/a""b"\n', 4, ("may not contain", "'\"' as %22")),
    ("url-braces", HEADER + ROWS + "meet,https://x.example/{a}\n", 4, ("'{' as %7B", "'}' as %7D")),
    ("url-dollar", HEADER + ROWS + "meet,https://x.example/$host\n", 4, ("'$'", "variable", "%24")),
    ("url-backslash", HEADER + ROWS + "meet,https://x.example/a\\b\n", 4, ("'\\\\' as %5C",)),
    ("url-non-ascii", HEADER + ROWS + "meet,https://x.example/café\n", 4, ("'é' as %C3%A9",)),
    ("url-newline-inside-quotes", HEADER + ROWS + 'meet,"https://x.example/\nSet-Cookie: a=b"\n', 4, ("whitespace inside",)),
    ("too-few-fields", HEADER + ROWS + "meet\n", 4, ("1 field(s), expected 2", "put a comma")),
    ("too-many-fields", HEADER + ROWS + "meet,https://x.example/?a=1,2\n", 4, ("3 field(s), expected 2", "double quotes")),
    ("trailing-comma", HEADER + ROWS + "meet,https://x.example/,\n", 4, ("3 field(s)", "delete the extra")),
    ("whitespace-only-line", HEADER + ROWS + "   \n", 4, ("1 field(s)",)),
    ("broken-quoting", HEADER + ROWS + 'meet,"https://x.example/"x\n', 4, ("cannot be read as CSV", "double quotes")),
    ("unterminated-quote", HEADER + ROWS + 'meet,"https://x.example/\n', 4, ("cannot be read as CSV",)),
    ("alias-to-missing-keyword", HEADER + ROWS + "vote,https://link.hypha.coop/lomio\n", 4, ("no keyword 'lomio'", "add that keyword or write the final destination")),
    ("alias-to-itself", HEADER + ROWS + "vote,https://link.hypha.coop/Vote\n", 4, ("'vote' points at itself", "final destination")),
    ("alias-loop-of-two", HEADER + ROWS + "a,https://link.hypha.coop/b\nb,https://link.hypha.coop/a\n", 4, ("loop", "a (line 4) -> b (line 5) -> a")),
    ("alias-to-shortener-root", HEADER + ROWS + "vote,https://link.hypha.coop/\n", 4, ("points at the shortener", "not at one keyword")),
    ("alias-with-query", HEADER + ROWS + "vote,https://link.hypha.coop/loomio?x=1\n", 4, ("not at one keyword", "no query")),
    ("alias-with-two-segments", HEADER + ROWS + "vote,https://link.hypha.coop/loomio/x\n", 4, ("not at one keyword",)),
]


@pytest.mark.parametrize("text,line,words", [pytest.param(t, n, w, id=i) for i, t, n, w in BAD])
def test_bad_input_is_refused_with_its_line_and_the_fix(text, line, words):
    messages = messages_at(refusal(text), line)
    assert any(all(w in m for w in words) for m in messages), f"line {line}: expected {words} in one of {messages}"


def test_a_loop_of_three_names_every_keyword_in_it_with_its_line_once():
    text = HEADER + ROWS + (
        "c,https://link.hypha.coop/a\n"  # 4
        "into,https://link.hypha.coop/c\n"  # 5: leads into the loop, not part of it
        "a,https://link.hypha.coop/b\n"  # 6
        "b,https://link.hypha.coop/c\n"  # 7
    )
    exc = refusal(text)
    assert [str(p) for p in exc.problems] == [
        "shortlinks.csv:4: aliases form a loop: c (line 4) -> a (line 6) -> b (line 7) -> c; "
        "point one of them at a real destination instead"
    ]


def test_every_problem_is_reported_together_in_line_order():
    text = HEADER + ROWS + "".join(
        [
            "meet, https://meet.jit.si/x\n",  # 4
            "a.b,https://x.example/\n",  # 5
            "handbook,https://y.example/\n",  # 6
            "ok1,https://x.example/1\n",  # 7
            "ok2,https://x.example/2\n",  # 8
            "ok3,https://x.example/3\n",  # 9
            "vote,https://link.hypha.coop/nope\n",  # 10
            "x,javascript:alert(1)\n",  # 11
        ]
    )
    exc = refusal(text)
    assert [p.path for p in exc.problems] == [f"shortlinks.csv:{n}" for n in (4, 5, 6, 10, 11)]
    report = str(exc)
    assert report.startswith("shortlinks.csv: 5 problem(s)")
    assert report.index("shortlinks.csv:4:") < report.index("shortlinks.csv:10:")


def test_one_line_can_carry_several_problems():
    messages = messages_at(refusal(HEADER + " x ,https://a.example/ b${}\n"), 2)
    assert len(messages) == 4, messages
    for words in ("keyword ' x ' has stray whitespace before and after", "whitespace inside", "%24", "%7B"):
        assert any(words in m for m in messages), f"{words!r} not in {messages}"


def test_a_row_with_a_broken_destination_is_reported_once_not_again_by_its_aliases():
    exc = refusal(HEADER + "loomio,ftp://x/\nvote,https://link.hypha.coop/loomio\n")
    assert [p.path for p in exc.problems] == ["shortlinks.csv:2"]


# --- quoting for nginx ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,quoted",
    [
        pytest.param("https://a.example/", '"https://a.example/"', id="plain"),
        pytest.param('https://a.example/"; return 200 "x', '"https://a.example/\\"; return 200 \\"x"', id="double-quote"),
        pytest.param("https://a.example/a\\b", '"https://a.example/a\\\\b"', id="backslash"),
        pytest.param("https://a.example/;{}#", '"https://a.example/;{}#"', id="semicolon-and-braces"),
    ],
)
def test_values_are_quoted_so_they_stay_one_nginx_string(value, quoted):
    assert nginx_quote(value) == quoted


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("https://a.example/$host", id="dollar"),
        pytest.param("https://a.example/\r\nSet-Cookie: a=b", id="newline"),
        pytest.param("https://a.example/\x00", id="nul"),
    ],
)
def test_values_nginx_cannot_hold_literally_are_refused_at_render_time(value):
    with pytest.raises(ValueError):
        nginx_quote(value)
    with pytest.raises(ValueError):
        render_map([Link("x", value, 2)])


def test_rendering_hand_built_links_still_checks_aliases():
    with pytest.raises(ShortlinksError, match="no keyword 'gone'"):
        render_map([Link("vote", "https://link.hypha.coop/gone", 2, alias_of="gone")])


# --- the real nginx ---------------------------------------------------------------------------


def _nginx() -> str:
    if NGINX is None:
        pytest.fail("nginx is not installed; run `make setup` (Debian package nginx) (or nginx)")
    return NGINX


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nginx_conf(tmp: Path, port: int, links: list[Link]) -> Path:
    """A minimal nginx.conf around the two rendered files, with every path it writes inside `tmp`."""
    (tmp / "shortlinks-map.conf").write_text(render_map(links))
    (tmp / "shortlinks-location.conf").write_text(render_location(HOST))
    conf = tmp / "nginx.conf"
    temp_paths = "".join(f"    {kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp_paths}"
        f"    include {tmp}/shortlinks-map.conf;\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        f"        server_name {HOST};\n"
        f"        include {tmp}/shortlinks-location.conf;\n"
        "    }\n"
        "}\n"
    )
    return conf


def _nginx_t(tmp: Path, conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_nginx(), "-t", "-q", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_rendered_map_and_location_pass_nginx_t(tmp_path):
    conf = _nginx_conf(tmp_path, _free_port(), parse(GOOD, shortener_host=HOST) + [HOSTILE])
    result = _nginx_t(tmp_path, conf)
    assert result.returncode == 0, result.stderr


def test_the_repositorys_links_pass_nginx_t(tmp_path):
    conf = _nginx_conf(tmp_path, _free_port(), shortlinks.load(shortener_host=HOST))
    result = _nginx_t(tmp_path, conf)
    assert result.returncode == 0, result.stderr


def test_nginx_t_rejects_a_value_left_unquoted(tmp_path):
    """The check above can fail: the hostile destination merely wrapped in quotes breaks out of the map."""
    conf = _nginx_conf(tmp_path, _free_port(), parse(GOOD, shortener_host=HOST) + [HOSTILE])
    map_file = tmp_path / "shortlinks-map.conf"
    naive = map_file.read_text().replace(nginx_quote(HOSTILE.destination), f'"{HOSTILE.destination}"')
    assert naive != map_file.read_text()
    map_file.write_text(naive)
    assert _nginx_t(tmp_path, conf).returncode != 0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """nginx serving GOOD plus the hand-built hostile link on a free loopback port; stopped by PID."""
    tmp = tmp_path_factory.mktemp("nginx")
    port = _free_port()
    conf = _nginx_conf(tmp, port, parse(GOOD, shortener_host=HOST) + [HOSTILE])
    checked = _nginx_t(tmp, conf)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(
        [_nginx(), "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited with {proc.returncode}: {proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not listen on 127.0.0.1:{port} within 10 s")
                time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # the master stops its workers
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        proc.stderr.close()


def get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    """One GET to the served shortener; redirects are returned, never followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": HOST})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path,location",
    [
        pytest.param("/handbook", FINAL["handbook"], id="keyword"),
        pytest.param("/meet", FINAL["meet"], id="external-destination"),
        pytest.param("/loomio", FINAL["loomio"], id="keyword-written-in-upper-case-in-the-csv"),
        pytest.param("/LoomIO", FINAL["loomio"], id="mixed-case-request"),
        pytest.param("/HANDBOOK/", FINAL["handbook"], id="upper-case-with-trailing-slash"),
        pytest.param("/handbook/", FINAL["handbook"], id="trailing-slash"),
        pytest.param("/handbook?utm_source=poster", FINAL["handbook"], id="query-string-ignored"),
        pytest.param("/vote", FINAL["loomio"], id="alias-goes-straight-to-the-final-destination"),
        pytest.param("/agm", FINAL["loomio"], id="alias-chain-goes-straight-to-the-final-destination"),
        pytest.param("/wiki", FINAL["wiki"], id="semicolon-comma-query-and-fragment-kept"),
        pytest.param("/injected", HOSTILE.destination, id="quote-brace-semicolon-stay-inside-the-value"),
    ],
)
def test_a_keyword_redirects_with_302_to_its_destination(served, path, location):
    status, headers, _ = get(served, path)
    assert (status, headers.get("location")) == (shortlinks.REDIRECT_STATUS, location)
    assert status == 302


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/nope", id="unknown-keyword"),
        pytest.param("/", id="root"),
        pytest.param("/handbook/extra", id="keyword-with-more-path"),
        pytest.param("/handbookx", id="keyword-prefix-only"),
        pytest.param("/.well-known/acme-challenge/x", id="well-known"),
    ],
)
def test_an_unknown_keyword_gets_a_404_saying_how_to_request_a_link(served, path):
    status, headers, body = get(served, path)
    assert status == shortlinks.UNKNOWN_STATUS == 404
    assert "location" not in headers
    assert headers["content-type"].startswith("text/plain")
    assert f"No short link by that name on {HOST}." in body
    assert "shortlinks.csv" in body and "pull request" in body and "keyword,destination_url" in body


def test_a_bad_csv_stops_the_program_before_any_resource(tmp_path, monkeypatch):
    """The program renders every host's files before registering anything, so a bad line deploys nothing."""
    import ops.mockrun
    import render.shortlinks

    bad = tmp_path / "shortlinks.csv"
    bad.write_text("keyword,destination_url\nloomio,https://loomio.hypha.coop/\nLoomio,ftp://x\n")
    monkeypatch.setattr(render.shortlinks, "CSV_PATH", bad)
    with pytest.raises(ShortlinksError) as caught:
        ops.mockrun.run_stack("prod")
    assert any(p.path == "shortlinks.csv:3" for p in caught.value.problems)
    assert ops.mockrun.last_run.resources == []
