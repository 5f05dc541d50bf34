"""The document model every markdown document is built from, and its markdown and HTML writers.

A document is a list of blocks (Heading, Para, Bullets, Note, Table, Image, Raw); `render_markdown`
turns it into GitHub-flavoured markdown, byte for byte the same for the same blocks, and
`render_html` turns that markdown into one self-contained HTML page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union


@dataclass
class Heading:
    level: int
    text: str
    anchor: Optional[str] = None


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[Union[str, tuple[str, list[str]]]]  # a string, or (item, nested items)


@dataclass
class Note:
    lines: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # right-aligned column indexes


@dataclass
class Image:
    alt: str
    path: str  # relative to the report


@dataclass
class Raw:
    text: str


Block = Union[Heading, Para, Bullets, Note, Table, Image, Raw]


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            if b.anchor:
                out.append(f'<a id="{b.anchor}"></a>\n')
            out.append("#" * b.level + " " + b.text + "\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Bullets):
            lines = []
            for item in b.items:
                text, subs = (item, []) if isinstance(item, str) else item
                lines.append(f"- {text}")
                lines += [f"  - {sub}" for sub in subs]
            out.append("\n".join(lines) + "\n")
        elif isinstance(b, Note):
            out.append("\n>\n".join(f"> {line}" for line in b.lines) + "\n")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(b.header) + " |",
                     "|" + "|".join("---:" if i in b.right else "---" for i in range(len(b.header))) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in b.rows]
            out.append("\n".join(lines) + "\n")
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path})\n")
        elif isinstance(b, Raw):
            out.append(b.text + "\n")
    return "\n".join(out)


HTML_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;line-height:1.45;color:#1b1b1b}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}blockquote{border-left:4px solid #e0a000;background:#fff8e6;margin:1em 0;padding:.5em 1em}
code{background:#f3f3f3;padding:0 .2em}img{max-width:100%}"""


def render_html(markdown: str, title: str) -> str:
    """The markdown report as one HTML page (same content; markdown-it, which rich already needs)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    title = title.replace("&", "&amp;").replace("<", "&lt;")
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n"
            f"<style>\n{HTML_STYLE}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n")
