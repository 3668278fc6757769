"""A report as a list of blocks, rendered to Markdown and to a standalone HTML page.

Blocks: ("h", text), ("p", text), ("table", columns, rows: dicts keyed by column), ("img", path relative to
the report, caption).
Numbers are formatted once (`fmt`) so the Markdown and the HTML show the same digits as the JSON rounding.
"""
from __future__ import annotations

import html
from pathlib import Path

from kd2edge.files import write_text


def fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def to_markdown(title: str, blocks: list[tuple]) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        if b[0] == "h":
            out += [f"## {b[1]}", ""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "table":
            cols, rows = b[1], b[2]
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "|".join("---" for _ in cols) + "|")
            out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
            out.append("")
        elif b[0] == "img":
            out += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(out)


def to_html(title: str, blocks: list[tuple]) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h2>{e(b[1])}</h2>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(c)}</th>" for c in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(fmt(r.get(c)))}</td>" for c in b[1]) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            body.append(f'<figure><img src="{e(b[1])}" alt="{e(b[2])}"><figcaption>{e(b[2])}</figcaption></figure>')
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:13px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_report(folder: Path, title: str, blocks: list[tuple]) -> tuple[Path, Path]:
    folder = Path(folder)
    md = write_text(folder / "report.md", to_markdown(title, blocks))
    page = write_text(folder / "report.html", to_html(title, blocks))
    return md, page
