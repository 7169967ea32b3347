"""Key parts are bounded, storage-safe and unambiguous whatever the client sends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from traffik._keys import MAX_PART, identity_part, route_part, template_part

FORBIDDEN = set(" {}\t\r\n\x00\x7f")
texts = st.text(max_size=300) | st.text(alphabet="abc:/#{}<> %~|", max_size=20)


def check_bounded(part: str) -> None:
    assert len(part) <= MAX_PART or (part.startswith("#") and len(part) == 33)
    assert not FORBIDDEN & set(part)
    assert part.isascii()


@given(texts)
def test_parts_are_bounded_and_safe(text: str) -> None:
    for part in (route_part(text), identity_part(text), template_part(text)):
        check_bounded(part)
    assert ":" not in route_part(text)
    assert ":" not in template_part(text)


@given(texts, texts)
def test_parts_are_injective(a: str, b: str) -> None:
    if a != b:
        assert identity_part(a) != identity_part(b)
        assert route_part(a) != route_part(b)


@given(texts, texts, texts, texts)
def test_route_and_identity_cannot_shift_the_boundary(r1: str, i1: str, r2: str, i2: str) -> None:
    if (r1, i1) != (r2, i2):
        assert f"{route_part(r1)}:{identity_part(i1)}" != f"{route_part(r2)}:{identity_part(i2)}"


@given(texts)
def test_a_raw_path_never_equals_a_template(text: str) -> None:
    # Templates write {param} as <param>, which raw paths never contain literally.
    assert route_part(text) != template_part("/items/{id}")
    assert route_part(text) != template_part("/" + "x" * 200)


def test_literals_stay_readable() -> None:
    assert route_part("/items/42") == "/items/42"
    assert template_part("/items/{item_id}") == "/items/<item_id>"
    assert identity_part("2001:db8::/64") == "2001:db8::/64"
    assert identity_part("user:42") == "user:42"
    assert identity_part("#" + "0" * 32) != "#" + "0" * 32


def test_an_explicit_route_key_replaces_method_and_route() -> None:
    from traffik._keys import ROUTE_KEY_SCOPE, RouteKeys

    keys = RouteKeys()
    get = {"type": "http", "method": "GET", "path": "/a", ROUTE_KEY_SCOPE: "mw/api/"}
    post = {"type": "http", "method": "POST", "path": "/b", ROUTE_KEY_SCOPE: "mw/api/"}
    assert keys.route_key(get) == keys.route_key(post) == "*mw/api/"
    # An area never shares a key with a route of the same text.
    assert keys.route_key({"type": "http", "method": "GET", "path": "mw/api/"}) != "*mw/api/"
    assert keys.route_key(get, "chat") == "*mw/api/|chat"
