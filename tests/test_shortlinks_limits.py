"""shortlinks.csv at its limits: the longest keyword the real nginx accepts, linear alias chains, damaged bytes."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

from render import shortlinks
from render.shortlinks import MAX_KEYWORD, Link, ShortlinksError, parse, resolve
from tests.test_shortlinks import HOST, _free_port, _nginx_conf, _nginx_t

pytestmark = pytest.mark.program

HEADER = "keyword,destination_url\n"


def test_the_longest_allowed_keyword_passes_the_real_nginx_t(tmp_path):
    word = "k" * MAX_KEYWORD
    links = parse(f"{HEADER}{word},https://x.example/\nshort,https://link.hypha.coop/{word}\n", shortener_host=HOST)
    result = _nginx_t(tmp_path, _nginx_conf(tmp_path, _free_port(), links))
    assert result.returncode == 0, result.stderr


def test_one_character_more_breaks_nginx_t_so_the_limit_is_nginxs_own(tmp_path):
    """Built past the parser: this is the map nginx would get if the CSV allowed one more character."""
    links = [Link("k" * (MAX_KEYWORD + 1), "https://x.example/", 2)]
    result = _nginx_t(tmp_path, _nginx_conf(tmp_path, _free_port(), links))
    assert result.returncode != 0 and "map_hash_bucket_size" in result.stderr, result.stderr


def test_a_keyword_over_the_limit_is_refused_with_its_line():
    with pytest.raises(ShortlinksError) as caught:
        parse(f"{HEADER}{'k' * (MAX_KEYWORD + 1)},https://x.example/\n", shortener_host=HOST)
    assert [p.path for p in caught.value.problems] == ["shortlinks.csv:2"]
    assert f"at most {MAX_KEYWORD}" in caught.value.problems[0].message


def _chain(n: int) -> list[Link]:
    """k0 is a real destination; every k<i> is an alias of k<i-1>: the longest chain n links make."""
    return [Link("k0", "https://x.example/", 2)] + [Link(f"k{i}", f"https://{HOST}/k{i - 1}", i + 2, f"k{i - 1}") for i in range(1, n)]


def _resolve_cpu_seconds(n: int) -> float:
    links = _chain(n)
    links.reverse()  # the worst order for a walk per link: each starts at the far end of the chain
    # CPU time: the shared machine's load does not count against us; no GC passes, whose cost grows
    # with the whole heap (the links themselves), not with what resolve() does.
    gc.disable()
    try:
        started = time.process_time()
        final = resolve(links)
        elapsed = time.process_time() - started
    finally:
        gc.enable()
    assert set(final.values()) == {"https://x.example/"} and len(final) == n
    return elapsed


def test_a_100000_alias_chain_resolves_in_linear_time():
    # A walk per link to the chain's end (the old resolve) is 5 * 10**9 steps here: hours, not 2 s.
    elapsed = _resolve_cpu_seconds(100_000)
    assert elapsed <= 2, f"{elapsed:.2f} s CPU"


def test_a_long_loop_is_reported_once_with_a_bounded_message():
    links = _chain(5_000)
    links[0] = Link("k0", f"https://{HOST}/k4999", 2, "k4999")
    with pytest.raises(ShortlinksError) as caught:
        resolve(links)
    (problem,) = caught.value.problems
    assert "loop" in problem.message and "more)" in problem.message and len(problem.message) < 1000


GOOD = HEADER + "handbook,https://handbook.hypha.coop/\nvote,https://link.hypha.coop/handbook\n"


@pytest.mark.parametrize(
    "data, line, words",
    [
        pytest.param(GOOD.encode().replace(b"handbook.", b"hand\xffbook."), 2, "not valid UTF-8", id="invalid-utf8"),
        pytest.param(GOOD.encode("utf-16"), 1, "not valid UTF-8", id="utf-16"),
        pytest.param(GOOD.encode().replace(b"https://link", b"https://l\x00ink"), 3, "NUL", id="nul"),
        pytest.param(b"\xef\xbb\xbf" + GOOD.encode(), 1, "byte order mark", id="bom"),
    ],
)
def test_damaged_bytes_are_config_errors_with_their_line(tmp_path: Path, data, line, words):
    path = tmp_path / "shortlinks.csv"
    path.write_bytes(data)
    with pytest.raises(ShortlinksError) as caught:
        shortlinks.load(path, shortener_host=HOST)
    assert any(p.path == f"shortlinks.csv:{line}" and words in p.message for p in caught.value.problems), str(caught.value)


def test_crlf_line_ends_read_as_the_same_links(tmp_path):
    path = tmp_path / "shortlinks.csv"
    path.write_bytes(GOOD.replace("\n", "\r\n").encode())
    assert shortlinks.load(path, shortener_host=HOST) == parse(GOOD, shortener_host=HOST)


def test_a_csv_over_the_size_limit_is_refused_by_name_with_its_size(tmp_path):
    path = tmp_path / "shortlinks.csv"
    path.write_bytes(GOOD.encode() + b"#" * shortlinks.MAX_FILE_BYTES)
    with pytest.raises(ShortlinksError) as caught:
        shortlinks.load(path, shortener_host=HOST)
    (problem,) = caught.value.problems
    assert problem.path == "shortlinks.csv:1" and "bytes, over the limit of 16,777,216" in problem.message
