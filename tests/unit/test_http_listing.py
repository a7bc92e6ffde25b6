"""The management API's shared list logic (mailslot.http.listing) and request checks (bodies, auth), pure:
no broker, no sockets. The behaviour is RabbitMQ's rabbit_mgmt_util (see the module docstrings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from unittest.mock import MagicMock

import pytest

from mailslot.core.access import User
from mailslot.core.errors import AccessRefused
from mailslot.http.auth import Rule, authenticate, check_rule
from mailslot.http.bodies import decode_body, parse_bool, parse_int
from mailslot.http.errors import ApiError
from mailslot.http.listing import Listing, ListQuery, dotted, list_documents, select_columns


def query(**overrides: Any) -> ListQuery:
    base: dict[str, Any] = {"page": None, "page_size": 100, "name": None, "use_regex": False, "sort": None,
                            "sort_reverse": False, "columns": None}
    base.update(overrides)
    return ListQuery(**base)


@dataclass
class Item:
    vhost: str
    name: str
    size: Any


ITEMS = [Item("/", "b", 2), Item("/", "a", None), Item("v", "a", "text"), Item("/", "c", 10)]
LISTING = Listing(
    document=lambda i: {"vhost": i.vhost, "name": i.name, "size": i.size, "nested": {"n": len(i.name)}},
    basic={"vhost": lambda i: i.vhost, "name": lambda i: i.name},
)


def names(result: Any) -> list[str]:
    items = result["items"] if isinstance(result, dict) else result
    return [f"{i['vhost']}{i['name']}" for i in items]


def test_default_sort_is_vhost_then_name_and_reverse_reverses() -> None:
    assert names(list_documents(query(), ITEMS, LISTING)) == ["/a", "/b", "/c", "va"]
    assert names(list_documents(query(sort_reverse=True), ITEMS, LISTING)) == ["va", "/c", "/b", "/a"]


def test_sorting_on_a_document_field_uses_erlangs_order_of_mixed_values() -> None:
    # number < atom (null) < binary (text); ties fall back to vhost, name
    assert names(list_documents(query(sort=("size",)), ITEMS, LISTING)) == ["/b", "/c", "/a", "va"]
    assert names(list_documents(query(sort=()), ITEMS, LISTING)) == ["/b", "/a", "va", "/c"]  # explicit empty: as given


def test_pages_and_the_envelope() -> None:
    page = list_documents(query(page=2, page_size=3), ITEMS, LISTING)
    assert {k: v for k, v in page.items() if k != "items"} == {
        "filtered_count": 4, "item_count": 1, "page": 2, "page_count": 2, "page_size": 3, "total_count": 4}
    assert names(page) == ["va"]
    assert list_documents(query(page=3, page_size=2), ITEMS, LISTING)["items"] == []  # just past the end is empty
    with pytest.raises(ApiError) as error:
        list_documents(query(page=4, page_size=2), ITEMS, LISTING)
    assert (error.value.status, error.value.error) == (400, "page_out_of_range")


def test_name_filters_only_paged_requests_and_only_as_text_unless_asked() -> None:
    items = [Item("/", n, 0) for n in ("a.b", "aXb", "A.B.c")]
    assert len(list_documents(query(name="a.b"), items, LISTING)) == 3  # not paged: not filtered (RabbitMQ)
    assert names(list_documents(query(page=1, name="a.b"), items, LISTING)) == ["/A.B.c", "/a.b"]
    assert names(list_documents(query(page=1, name="a.b", use_regex=True), items, LISTING)) == ["/A.B.c", "/a.b", "/aXb"]
    assert names(list_documents(query(page=1, name="(", use_regex=False), [Item("/", "x(y", 0)], LISTING)) == ["/x(y"]


def test_columns_keep_named_and_nested_fields() -> None:
    document = {"name": "q", "message_stats": {"publish": 1, "ack": 2}, "other": 3}
    assert select_columns(document, [("name",), ("message_stats", "publish")]) == {"name": "q", "message_stats": {"publish": 1}}
    assert dotted(document, "message_stats.ack") == 2 and dotted(document, "message_stats.nope") == 0


@pytest.mark.parametrize(("raw", "expected"), [(b"", {}), (b"null", {}), (b" undefined ", {}), (b'{"a": 1}', {"a": 1})])
def test_bodies_rabbitmq_takes_as_empty_or_objects(raw: bytes, expected: dict[str, Any]) -> None:
    assert decode_body(raw) == expected


@pytest.mark.parametrize(("raw", "reason"), [(b"{x", "not_json"), (b"[1]", "not_json"), (b"\xff", "not_json"),
                                             (b'"x"', "invalid payload: the request body JSON-decoded to a string. "
                                                      "Is the input doubly-JSON-encoded?")])
def test_bodies_refused_with_rabbitmqs_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(ApiError) as error:
        decode_body(raw)
    assert (error.value.status, error.value.reason) == (400, reason)


def test_flags_and_numbers_as_rabbitmqadmin_sends_them() -> None:
    assert parse_bool("durable", "true") is True and parse_bool("durable", False) is False
    assert parse_int("count", "12") == 12 and parse_int("count", 3.0) == 3
    for bad in ("yes", 1, None):
        with pytest.raises(ApiError):
            parse_bool("durable", bad)
    with pytest.raises(ApiError) as error:
        parse_int("count", True)
    assert error.value.reason.startswith("count:")


# ---- authentication and tag rules ----------------------------------------------------------------------


class Access:
    """An AccessControl that knows users by tag and grants vhost 'mine' only."""

    def authenticate(self, username: str, password: str, peer_host: str) -> User:
        if password != "pw":
            raise AccessRefused("PLAIN login refused: user - invalid credentials")
        if username == "guest" and peer_host != "127.0.0.1":
            raise AccessRefused(f"PLAIN login refused: user '{username}' - user can only connect via localhost")
        return User(username, frozenset({username}) - {"none", "guest"} | ({"administrator"} if username == "guest" else set()))

    def vhost_allowed(self, user: User, vhost: str) -> bool:
        return vhost == "mine"

    def check(self, user: User, vhost: str, permission: Any, kind: Any, name: str) -> None:
        pass


def request(user: str | None, password: str = "pw", remote: str = "127.0.0.1") -> Any:
    import base64

    fake = MagicMock()
    fake.remote = remote
    fake.headers = {} if user is None else {
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return fake


def refusal(user: str | None, **kwargs: Any) -> tuple[int, str, Any]:
    with pytest.raises(ApiError) as error:
        authenticate(Access(), request(user, **kwargs))  # type: ignore[arg-type]
    return error.value.status, error.value.error, error.value.reason


def test_logins_are_refused_as_rabbitmq_refuses_them() -> None:
    assert refusal(None)[0] == 401
    assert refusal("management", password="wrong") == (401, "not_authorized", "Login failed")
    assert refusal("guest", remote="10.1.2.3") == (401, "not_authorised", "User can only log in via localhost")
    assert refusal("none") == (401, "not_authorised", "Not management user")
    assert authenticate(Access(), request("guest")).tags == {"administrator"}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tag", "rule", "vhost", "allowed"),
    [
        ("management", Rule.VHOST, "mine", True),
        ("management", Rule.VHOST, "theirs", False),
        ("management", Rule.VHOST, None, True),
        ("management", Rule.VHOST_VISIBLE, "theirs", False),
        ("monitoring", Rule.VHOST_VISIBLE, "theirs", True),
        ("monitoring", Rule.VHOST, "theirs", False),
        ("management", Rule.MONITOR, None, False),
        ("monitoring", Rule.MONITOR, None, True),
        ("monitoring", Rule.ADMIN, None, False),
        ("administrator", Rule.ADMIN, None, True),
        ("administrator", Rule.VHOST, "theirs", True),
        ("management", Rule.POLICIES, "mine", False),
        ("policymaker", Rule.POLICIES, "mine", True),
        ("policymaker", Rule.POLICIES, "theirs", False),
        ("policymaker", Rule.GLOBAL_PARAMETERS, None, True),
        ("monitoring", Rule.GLOBAL_PARAMETERS, None, False),
    ],
)
def test_tag_rules(tag: str, rule: Rule, vhost: str | None, allowed: bool) -> None:
    user = User(tag, frozenset({tag}))
    if allowed:
        check_rule(rule, user, Access(), vhost, vhost_exists=True)  # type: ignore[arg-type]
    else:
        with pytest.raises(ApiError) as error:
            check_rule(rule, user, Access(), vhost, vhost_exists=True)  # type: ignore[arg-type]
        assert (error.value.status, error.value.error) == (401, "not_authorised")
