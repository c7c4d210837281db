"""The HTML wrapper of an email: built-in layout, mandatory footer, CSS inlining.

Every email must show the company's postal address and an unsubscribe link (CAN-SPAM,
RFC 8058 one-click aside). Templates may place them themselves; when they do not, the
standard footer here is appended to the text part and to the HTML part.
"""

from __future__ import annotations

import functools
import html
import re

import css_inline

from .errors import TemplateError

BUILTIN_LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ subject }}</title>
<style>
body { margin: 0; padding: 0; background-color: #ffffff; }
.nm-body { max-width: 600px; margin: 0 auto; padding: 16px;
  font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
  font-size: 16px; line-height: 1.5; color: #222222; }
a { color: #1a5fb4; }
</style>
</head>
<body>
{% if preheader %}<div style="display:none;max-height:0;overflow:hidden;">{{ preheader }}</div>
{% endif %}<div class="nm-body">
{{ content }}
</div>
</body>
</html>
"""

_FOOTER_STYLE = (
    "margin-top:32px;padding-top:16px;border-top:1px solid #dddddd;"
    "font-size:12px;line-height:1.5;color:#666666;"
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)

# Remote stylesheets are never fetched: rendering must not touch the network or disk.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def inline_css(document: str) -> str:
    return _INLINER.inline(document)


def _reason(company_name: str) -> str:
    who = company_name or "us"
    return f"You are receiving this because you have been in touch with {who} about a role."


@functools.lru_cache(maxsize=64)  # one address per install: split it once
def address_lines(address: str) -> tuple[str, ...]:
    """The postal address as the footer shows it: its non-blank lines, trimmed."""
    return tuple(line.strip() for line in address.splitlines() if line.strip())


def text_footer(text: str, company_name: str, address: str, unsubscribe_url: str) -> str:
    """`text` with the standard footer appended unless it already has link and address."""
    lines = address_lines(address)
    has_address = all(line in text for line in lines)
    if unsubscribe_url in text and has_address:
        return text
    parts = [text.rstrip("\n"), "", "-- "]
    if unsubscribe_url not in text:
        parts += [_reason(company_name), f"Unsubscribe: {unsubscribe_url}"]
    if not has_address or unsubscribe_url not in text:
        parts += lines
    return "\n".join(parts) + "\n"


def finish_page(
    page: str, company_name: str, address: str, unsubscribe_url: str, layout_file: str
) -> str:
    """The rendered layout as sent: footer added when needed, CSS inlined."""
    page = html_footer(page, company_name, address, unsubscribe_url)
    try:
        return inline_css(page)
    except ValueError as exc:  # css_inline.InlineError
        raise TemplateError(layout_file, None, f"CSS: {exc}") from None


def html_footer(document: str, company_name: str, address: str, unsubscribe_url: str) -> str:
    """`document` with the footer inserted before `</body>` unless it already has both."""
    footer = footer_html(document, company_name, address, unsubscribe_url)
    return document if footer is None else insert_footer(document, footer)


def footer_html(
    document: str, company_name: str, address: str, unsubscribe_url: str,
    href: str | None = None,
) -> str | None:
    """The footer `document` needs (None: it has link and address already).

    `href` replaces the escaped unsubscribe URL in the link (the skeleton cache's token).
    """
    lines = [html.escape(line) for line in address_lines(address)]
    url = html.escape(unsubscribe_url)
    has_url = url in document or unsubscribe_url in document
    has_address = all(line in document for line in lines)
    if has_url and has_address:
        return None
    paragraphs = []
    if not has_url:
        paragraphs.append(
            f'<p style="margin:0 0 8px 0;">{html.escape(_reason(company_name))} '
            f'<a href="{url if href is None else href}" style="color:#666666;">Unsubscribe</a></p>'
        )
    paragraphs.append(f'<p style="margin:0;">{"<br>".join(lines)}</p>')
    return f'<div class="nm-footer" style="{_FOOTER_STYLE}">{"".join(paragraphs)}</div>\n'


def insert_footer(document: str, footer: str) -> str:
    ends = list(_BODY_END.finditer(document))
    if not ends:
        return document + footer
    at = ends[-1].start()
    return document[:at] + footer + document[at:]
