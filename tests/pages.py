"""Read the status page's HTML as a person reads it: its tables, forms and meta refresh.

For the test client's responses and Chromium's DOM alike; the standard library's HTML
parser, so that what is checked is the markup the browser got, not a template context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

__all__ = ["Form", "Page", "read_page"]


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[str] = field(default_factory=list)


@dataclass
class Page:
    #: Table id -> its body's rows, each a list of its cells' text; and its head's.
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    heads: dict[str, list[list[str]]] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    forms: list[Form] = field(default_factory=list)
    meta_refresh: list[str] = field(default_factory=list)
    #: Element id -> its text, for elements with an id that are not tables.
    texts: dict[str, str] = field(default_factory=dict)
    raw_texts: dict[str, str] = field(default_factory=dict)  # the same, whitespace kept
    #: The attributes of each ``<g class="minute">`` of the chart.
    chart_minutes: list[dict[str, str]] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)  # (summary, body) each

    def rows(self, table_id: str) -> list[list[str]]:
        """The rows of the table's body."""
        return self.tables[table_id]


#: Text runs on across these; any other element separates words, as in ``visible_text``.
_INLINE = frozenset(
    "a abbr b bdi bdo cite code data dfn em i kbd mark q s samp small span strong sub sup "
    "time u var".split()
)
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._form: Form | None = None
        #: (id, depth at which it opened, its text so far) of the elements with an id.
        self._open_ids: list[tuple[str, int, list[str]]] = []
        self._depth = 0
        self._in_head = False
        self._details: list[list[str]] | None = None  # [summary parts, body parts]
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "meta" and attributes.get("http-equiv", "").lower() == "refresh":
            self.page.meta_refresh.append(attributes.get("content", ""))
        elif tag == "table":
            self._table = attributes.get("id", "")
            self.page.tables[self._table] = []
            self.page.heads[self._table] = []
        elif tag == "thead":
            self._in_head = True
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "form":
            self._form = Form(attributes.get("action", ""), attributes.get("method", "get"))
            self.page.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            if attributes.get("type") == "submit":
                self._form.buttons.append(attributes.get("value", ""))
            else:
                self._form.fields[attributes.get("name", "")] = attributes.get("value", "")
        elif tag == "g" and "minute" in attributes.get("class", "").split():
            self.page.chart_minutes.append(attributes)
        elif tag == "details":
            self._details = [[], []]
        elif tag == "summary":
            self._in_summary = True
        self._separate(tag)
        if tag not in _VOID:
            self._depth += 1
            if "id" in attributes and tag != "table":
                self._open_ids.append((attributes["id"], self._depth, []))

    def _separate(self, tag: str) -> None:
        if tag not in _INLINE:
            for _, _, parts in self._open_ids:
                parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        self._separate(tag)
        if self._open_ids and self._open_ids[-1][1] == self._depth:
            element_id, _, parts = self._open_ids.pop()
            self.page.raw_texts[element_id] = "".join(parts)
            self.page.texts[element_id] = " ".join("".join(parts).split())
        self._depth -= 1
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            rows = self.page.heads if self._in_head else self.page.tables
            rows[self._table].append(self._row)
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "caption" and self._caption is not None and self._table is not None:
            self.page.captions[self._table] = " ".join("".join(self._caption).split())
            self._caption = None
        elif tag == "table":
            self._table = None
        elif tag == "form":
            self._form = None
        elif tag == "summary":
            self._in_summary = False
        elif tag == "details" and self._details is not None:
            summary, body = ("".join(part).strip() for part in self._details)
            self.page.details.append((summary, body))
            self._details = None

    def handle_data(self, data: str) -> None:
        for _, _, parts in self._open_ids:
            parts.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)
        if self._details is not None:
            self._details[0 if self._in_summary else 1].append(data)


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page
