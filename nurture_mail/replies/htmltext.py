"""HTML mail bodies -> plain text that the quote stripper understands.

Quoting in HTML mail is structural, so it is translated into the plain-text conventions
`quotes.py` already knows: text inside <blockquote> gets a "> " prefix, the containers
Outlook and Hotmail put around a forwarded header block become an "-----Original
Message-----" line, and signature containers become a "-- " line.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

MAX_HTML_CHARS = 256 * 1024

SEPARATOR = "-----Original Message-----"
SIGNATURE = "-- "

_BLOCK = frozenset(
    [
        "address",
        "article",
        "aside",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_SKIP = frozenset(("style", "script", "head", "title", "xml", "template"))
# ids and classes that mark where a client put the message being replied to
_QUOTE_IDS = frozenset(("divrplyfwdmsg", "appendonsend", "stopspelling", "zwchr"))
_QUOTE_CLASSES = frozenset(("outlookmessageheader", "yahoo_quoted"))
_SIGNATURE_CLASSES = frozenset(("gmail_signature", "moz-signature"))
_SPACES = re.compile(r"[ \t\r\f\v\xa0\u200e\u200f]+")


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.current_quoted = False
        self.quote_depth = 0
        self.skip_depth = 0
        self.pre_depth = 0

    def _flush(self, blank: bool = False) -> None:
        """End the current line. An empty line is kept only where the author made one:
        a <br> on its own, or a paragraph holding just &nbsp; (Outlook)."""
        raw = "".join(self.current)
        text = _SPACES.sub(" ", raw).strip() if not self.pre_depth else raw.rstrip()
        if text:
            prefix = "> " if self.current_quoted else ""
            self.lines.append(prefix + text)
        elif (blank or "\xa0" in raw) and self.lines and self.lines[-1] != "":
            self.lines.append("")
        self.current = []
        self.current_quoted = False

    def _marker(self, line: str) -> None:
        self._flush()
        self.lines.append(line)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
            return
        if tag == "br":
            self._flush(blank=True)
        elif tag in _BLOCK:
            self._flush()
        attributes = {name: (value or "") for name, value in attrs}
        element_id = attributes.get("id", "").lower()
        classes = set(attributes.get("class", "").lower().split())
        if tag == "blockquote":
            self._flush()
            self.quote_depth += 1
        elif (
            element_id in _QUOTE_IDS
            or classes & _QUOTE_CLASSES
            or tag == "div"
            and _is_reply_header_border(attributes.get("style", ""))
        ):
            self._marker(SEPARATOR)
        elif classes & _SIGNATURE_CLASSES or "data-signatureblock" in attributes:
            self._marker(SIGNATURE)
        elif tag == "pre":
            self.pre_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <hr id="stopSpelling"/>: no content, so never opens a quote or skip
        if tag == "br":
            self._flush(blank=True)
        elif tag in _BLOCK:
            self._flush()
        element_id = dict(attrs).get("id") or ""
        if element_id.lower() in _QUOTE_IDS:
            self._marker(SEPARATOR)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if tag in _BLOCK or tag == "blockquote":
            self._flush()
        if tag == "blockquote":
            self.quote_depth = max(0, self.quote_depth - 1)
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            lines = data.split("\n")
            for line in lines[:-1]:
                self._add(line)
                self._flush()
            self._add(lines[-1])
        else:
            self._add(data.replace("\n", " "))

    def _add(self, text: str) -> None:
        if not text:
            return
        if not self.current and text.strip() and self.quote_depth:
            self.current_quoted = True
        self.current.append(text)


def _is_reply_header_border(style: str) -> bool:
    # Outlook and Windows Mail draw a thin top border above "From: ... Sent: ..."
    style = style.replace(" ", "").lower()
    return "border-top:solid" in style or (
        "border-top-style:solid" in style and "padding-top" in style
    )


def html_to_text(html: str) -> str:
    """Visible text of an HTML body, one block per line, quotes marked with "> "."""
    builder = _TextBuilder()
    try:
        builder.feed(html[:MAX_HTML_CHARS])
        builder.close()
    except Exception:  # HTMLParser is lenient, but never let markup stop classification
        pass
    builder._flush()
    return "\n".join(builder.lines).strip("\n")
