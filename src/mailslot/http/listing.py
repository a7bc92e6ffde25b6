"""Lists as RabbitMQ's management API returns them: sorting, paging, name filters and columns, shared by
every list endpoint.

Query parameters (rabbit_mgmt_util:pagination_params, sort_list, columns):

* ``sort`` (a column, dotted for nested fields: ``message_stats.publish``) is tried before the endpoint's
  default sort (``vhost``, ``name``); an empty ``sort=`` leaves the order as it is. ``sort_reverse=true``.
* ``page`` (from 1) and ``page_size`` (1..500, 100 by default) return RabbitMQ's envelope
  (``filtered_count``, ``item_count``, ``items``, ``page``, ``page_count``, ``page_size``,
  ``total_count``); without ``page`` the answer is a plain list, as RabbitMQ's.
* ``name`` keeps the objects whose name contains it, ignoring case; it is a regular expression only with
  ``use_regex=true``. As in RabbitMQ, the filter applies to paged requests (``page``) only.
* ``columns=name,message_stats.publish`` keeps only those fields of each object.

Speed with many objects (why this module is shaped as it is): an endpoint hands in its objects with
cheap accessors for the "basic" fields it can read without building a document (``vhost``, ``name``,
``messages``...). Sorting and filtering on those, then building documents for one page only, makes a paged
listing of 50,000 queues cost one sort of 50,000 keys and 100 documents, which is what RabbitMQ's
``augment_resources`` does too; sorting on any other field builds every document first.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from .errors import ApiError, bad_request, json_response

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100  # rabbit_mgmt_util ?DEFAULT_PAGE_SIZE
MAX_PAGE_SIZE = 500  # rabbit_mgmt_util ?MAX_PAGE_SIZE
# A name filter is a user's search box, not a program: a bound keeps a pathological pattern from being
# compiled at all (the regex itself runs on names of at most 255 bytes, AMQP's shortstr).
MAX_FILTER_LENGTH = 1000
DEFAULT_SORT = ("vhost", "name")


@dataclass(frozen=True, slots=True)
class ListQuery:
    page: int | None  # None: no pagination requested
    page_size: int
    name: str | None
    use_regex: bool
    sort: tuple[str, ...] | None  # None: the default sort; (): leave the order as it is
    sort_reverse: bool
    columns: tuple[tuple[str, ...], ...] | None  # None: every field

    @property
    def paged(self) -> bool:
        return self.page is not None


def _int_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise bad_request("Pagination parameters are invalid") from None


def parse_list_query(request: web.Request) -> ListQuery:
    """The list parameters of a request, refused with RabbitMQ's errors and texts."""
    query = request.query
    page, page_size = _int_param(request, "page"), _int_param(request, "page_size")
    if page is not None:
        valid = page > 0 and (page_size is None or 0 < page_size <= MAX_PAGE_SIZE)
        if not valid:
            shown = "undefined" if page_size is None else page_size
            raise bad_request(
                f"Invalid pagination parameters: page number {page}, page size {shown}",
                error="invalid_pagination_parameters",
            )
    name = query.get("name") or None
    if name is not None and len(name) > MAX_FILTER_LENGTH:
        raise bad_request(f"name: longer than {MAX_FILTER_LENGTH} characters")
    sort_text = query.get("sort")
    sort = None if sort_text is None else tuple(part for part in sort_text.split(",") if part)
    columns_text = query.get("columns")
    columns = None
    if columns_text is not None:
        columns = tuple(tuple(c.split(".")) for c in columns_text.split(",") if c)
    return ListQuery(
        page=page,
        page_size=page_size or DEFAULT_PAGE_SIZE,
        name=name,
        use_regex=query.get("use_regex") == "true",
        sort=sort,
        sort_reverse=query.get("sort_reverse") == "true",
        columns=columns,
    )


# ---- sorting as Erlang orders terms ------------------------------------------------------------------

# Erlang's term order (number < atom < map < list < binary), which RabbitMQ's lists:sort applies to mixed
# values: ``null``/booleans are atoms, strings are binaries. A missing field sorts as 0, as in RabbitMQ.
def _ordered(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (1, "" if value is None else str(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (4, value)
    if isinstance(value, dict):
        return (2, json.dumps(value, sort_keys=True, default=str))
    return (3, json.dumps(value, default=str))


def dotted(document: Mapping[str, Any], path: str) -> Any:
    """``document["a"]["b"]`` for ``"a.b"``; 0 when any part is missing (RabbitMQ's get_dotted_value)."""
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return 0
        value = value[part]
    return value


def _sort_keys(query: ListQuery, default_sort: Sequence[str]) -> tuple[str, ...] | None:
    if query.sort is not None and not query.sort:
        return None  # an explicitly empty sort: keep the order
    return (*(query.sort or ()), *default_sort)


# ---- name filter ---------------------------------------------------------------------------------------


def name_matcher(query: ListQuery) -> Callable[[str], bool] | None:
    """A test on object names for the request's ``name``: a case-insensitive substring, or a regular
    expression (searched, ignoring case) only when ``use_regex=true`` asks for one. Never a regex otherwise:
    a queue called ``a.b`` filters for the text ``a.b``."""
    if not query.paged or query.name is None:
        return None
    if query.use_regex:
        try:
            pattern = re.compile(query.name, re.IGNORECASE)
        except re.error as error:
            raise bad_request(f"name: not a valid regular expression ({error})") from None
        return lambda name: pattern.search(name) is not None
    needle = query.name.lower()
    return lambda name: needle in name.lower()


# ---- columns --------------------------------------------------------------------------------------------


def select_columns(value: Any, columns: Sequence[Sequence[str]]) -> Any:
    """Keep only the named fields (dotted paths descend into nested objects), as extract_column_items."""
    if isinstance(value, list):
        return [select_columns(item, columns) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        wanted = [c for c in columns if c and c[0] == key]
        if not wanted:
            continue
        if any(len(c) == 1 for c in wanted):
            out[key] = item
        else:
            out[key] = select_columns(item, [c[1:] for c in wanted])
    return out


# ---- the whole list -------------------------------------------------------------------------------------


Getter = Callable[[Any], Any] | str  # a function of the object, or the name of its attribute


@dataclass(frozen=True, slots=True)
class Listing:
    """How one endpoint lists its objects: their document, and the fields readable without building it
    (``basic``: each field's getter, returning one comparable type for every object, so these sort as
    they are; an attribute name sorts fastest, through ``operator.attrgetter``)."""

    document: Callable[[Any], dict[str, Any]]
    basic: Mapping[str, Getter]
    default_sort: Sequence[str] = DEFAULT_SORT
    name: Callable[[Any], str] | None = None  # the field ``name`` filters on; None: basic["name"]


def _getter(getter: Getter) -> Callable[[Any], Any]:
    return operator.attrgetter(getter) if isinstance(getter, str) else getter


def _basic_key(getters: list[Getter]) -> Callable[[Any], Any]:
    if all(isinstance(g, str) for g in getters):
        return operator.attrgetter(*getters)  # type: ignore[arg-type]  # all attribute names
    functions = [_getter(g) for g in getters]
    return lambda obj: tuple(get(obj) for get in functions)


def list_documents(query: ListQuery, items: Sequence[T], listing: Listing) -> Any:
    """The JSON value answered for ``items``: a sorted list, or the paged envelope. The name filter runs
    before the sort (RabbitMQ sorts first: the result is the same, and sorting what is kept is cheaper)."""
    keys = _sort_keys(query, listing.default_sort)
    basic = listing.basic
    documents: list[dict[str, Any]] | None = None
    objects: list[Any] = list(items)
    total = len(objects)
    matches = name_matcher(query)
    if matches is not None:
        name_of = listing.name or _getter(basic["name"])
        objects = [obj for obj in objects if matches(name_of(obj))]
    if keys is not None:
        if all(key in basic for key in keys):
            objects.sort(key=_basic_key([basic[key] for key in keys]))
        else:  # a field only the document has: build them all (RabbitMQ's slow path too)
            built = [(listing.document(obj), obj) for obj in objects]
            built.sort(key=lambda pair: tuple(_ordered(dotted(pair[0], key)) for key in keys))
            documents = [doc for doc, _ in built]
            objects = [obj for _, obj in built]
        if query.sort_reverse:
            objects.reverse()
            if documents is not None:
                documents.reverse()
    if query.page is None:
        page_docs = documents if documents is not None else [listing.document(obj) for obj in objects]
        return page_docs if query.columns is None else select_columns(page_docs, query.columns)
    size = query.page_size
    start = (query.page - 1) * size
    if start > len(objects):
        raise ApiError(
            400,
            "page_out_of_range",
            f"Page out of range, page: {query.page} page size: {size}, len: {len(objects)}",
        )
    chosen = documents[start : start + size] if documents is not None else None
    if chosen is None:
        chosen = [listing.document(obj) for obj in objects[start : start + size]]
    if query.columns is not None:
        chosen = select_columns(chosen, query.columns)
    return {
        "filtered_count": len(objects),
        "item_count": len(chosen),
        "items": chosen,
        "page": query.page,
        "page_count": (len(objects) + size - 1) // size,
        "page_size": size,
        "total_count": total,
    }


def reply_list(request: web.Request, items: Sequence[T], listing: Listing) -> web.Response:
    return json_response(list_documents(parse_list_query(request), items, listing))


def reply_object(request: web.Request, document: dict[str, Any]) -> web.Response:
    """One object; ``columns`` applies to it as to lists (RabbitMQ's reply/3 extracts columns too)."""
    columns = parse_list_query(request).columns
    return json_response(document if columns is None else select_columns(document, columns))
