"""A tiny PDF 1.4 writer for text documents: deterministic bytes, no dependencies.

It lays out lines of text on US Letter pages with the standard Helvetica fonts (no embedding), and
writes a correct cross-reference table. The same input always gives the same bytes: no creation
date, and the file identifier is a hash of the content. Used by the sandbox to produce real
paystub and tax form PDFs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, in points
MARGIN = 54
BODY_SIZE, HEADING_SIZE, TITLE_SIZE = 10, 12, 16
LEADING = 14
CONTENT_TYPE = "application/pdf"


def _escape(text: str) -> bytes:
    """A PDF literal string body: Latin-1 (others become '?'), with ( ) and backslash escaped."""
    raw = text.encode("latin-1", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _page_stream(title: str | None, lines: Sequence[str]) -> bytes:
    """Content stream of one page. Lines starting with '# ' are headings (bold); '' is a gap."""
    y = PAGE_HEIGHT - MARGIN
    out = [b"BT"]
    if title is not None:
        out.append(b"/F2 %d Tf 1 0 0 1 %d %d Tm (%s) Tj" % (TITLE_SIZE, MARGIN, y, _escape(title)))
        y -= LEADING * 2
    for line in lines:
        if line.startswith("# "):
            y -= LEADING // 2
            out.append(b"/F2 %d Tf 1 0 0 1 %d %d Tm (%s) Tj" % (HEADING_SIZE, MARGIN, y, _escape(line[2:])))
        elif line:
            out.append(b"/F1 %d Tf 1 0 0 1 %d %d Tm (%s) Tj" % (BODY_SIZE, MARGIN, y, _escape(line)))
        y -= LEADING
    out.append(b"ET")
    return b"\n".join(out) + b"\n"


def _paginate(lines: Sequence[str]) -> list[list[str]]:
    per_page = (PAGE_HEIGHT - 2 * MARGIN) // LEADING - 4
    pages = [list(lines[i : i + per_page]) for i in range(0, len(lines), per_page)]
    return pages or [[]]


def render(title: str, lines: Sequence[str], *, author: str = "") -> bytes:
    """A PDF with `title` on top of the first page and `lines` below, on as many pages as needed."""
    pages = _paginate(lines)
    # Objects: 1 catalog, 2 page tree, 3 Helvetica, 4 Helvetica-Bold, 5 info, then page + content pairs.
    first_page = 6
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(pages)))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title (%s) /Author (%s) /Producer (paylink sandbox) >>" % (_escape(title), _escape(author)),
    ]
    for i, page_lines in enumerate(pages):
        stream = _page_stream(title if i == 0 else None, page_lines)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 3 0 R"
            b" /F2 4 0 R >> >> /Contents %d 0 R >>" % (PAGE_WIDTH, PAGE_HEIGHT, first_page + 2 * i + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%sendstream" % (len(stream), stream))
    body = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, obj)
    xref_at = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        body += b"%010d 00000 n \n" % offset
    file_id = hashlib.md5(bytes(body), usedforsecurity=False).hexdigest().encode()
    body += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        file_id,
        file_id,
        xref_at,
    )
    return bytes(body)
