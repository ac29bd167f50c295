"""Markdown to the HTML subset QTextBrowser renders, with Pygments-highlighted code blocks.

QTextDocument understands HTML 4 tables and inline styles but not CSS boxes (no border-radius, no
padding on ``<pre>``), so a code block is a one-cell table with a header row holding its language
and a ``copy-code:N`` link. Raw HTML in the text is escaped, never rendered: model output is data.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from desktop.theme import Palette


@dataclass
class Rendered:
    html: str
    code_blocks: list[str] = field(default_factory=list)


@lru_cache(maxsize=4)
def _parser(dark: bool) -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable("table")
    md.enable("strikethrough")
    return md


@lru_cache(maxsize=4)
def _formatter(dark: bool) -> Any:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(nowrap=True, noclasses=True, style="github-dark" if dark else "default")


def highlight(code: str, lang: str, dark: bool) -> str:
    """``code`` as HTML spans with inline colours (plain escaped text for an unknown language)."""
    from pygments import highlight as pyg_highlight
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang.strip().lower()) if lang.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    return str(pyg_highlight(code, lexer, _formatter(dark)))


def render_markdown(text: str, palette: Palette, *, code_offset: int = 0) -> Rendered:
    """HTML for ``text``; code blocks are numbered from ``code_offset`` in their copy links."""
    md = _parser(palette.dark)
    tokens = md.parse(text)
    blocks: list[str] = []
    parts: list[str] = []
    start = 0
    # Render runs of ordinary tokens with markdown-it and replace each fence with our own block.
    for i, token in enumerate(tokens):
        if token.type in ("fence", "code_block"):
            if start < i:
                parts.append(md.renderer.render(tokens[start:i], md.options, {}))
            code = token.content.rstrip("\n")
            lang = (token.info or "").split()[0] if token.info else ""
            parts.append(_code_block(code, lang, code_offset + len(blocks), palette))
            blocks.append(code)
            start = i + 1
    if start < len(tokens):
        parts.append(md.renderer.render(tokens[start:], md.options, {}))
    body = "".join(parts)
    body = body.replace("<code>", f'<code style="font-family: monospace; background-color: {palette.code_bg};">')
    return Rendered(html=body, code_blocks=blocks)


def _code_block(code: str, lang: str, index: int, palette: Palette) -> str:
    label = html.escape(lang or "text")
    lines = highlight(code, lang, palette.dark).rstrip("\n").replace("\n", "<br>")
    return (
        f'<table width="100%" cellspacing="0" cellpadding="8" style="margin-top: 6px; margin-bottom: 6px; '
        f'background-color: {palette.code_bg}; border-collapse: collapse;">'
        f'<tr><td style="background-color: {palette.code_header}; color: {palette.muted}; font-size: small;">'
        f'{label}</td><td align="right" style="background-color: {palette.code_header}; font-size: small;">'
        f'<a href="copy-code:{index}" style="color: {palette.accent}; text-decoration: none;">Copy</a></td></tr>'
        f'<tr><td colspan="2" style="font-family: \'DejaVu Sans Mono\', monospace; white-space: pre-wrap; '
        f'color: {palette.text};">{lines}</td></tr></table>'
    )
