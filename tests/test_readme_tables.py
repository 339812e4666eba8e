"""Every number in a table of the README or a docs/ page comes from a committed file the
table names; the README stays a front door and its links lead somewhere.

Pages: ``README.md`` and every ``docs/*.md``. Rules for each table (the pages' convention):

* the paragraph right before a table, or the line right after it, names its source file as
  ``bench/results/NAME``; the file must exist;
* every number in the table's cells (thousands separators and ``%``/``×`` dropped; code
  spans, links and the header row skipped) appears in that file, as written or as a file
  number rounded to the decimals the page shows;
* a table whose numbers have no committed source yet says ``pending re-measurement`` in
  that paragraph, and must then name no bench/results file (until it is measured; the
  command is in ``bench/make_results.py``);
* a table without numbers (e.g. the install extras) needs no source.

Besides: ``README.md`` is at most 300 lines and links every docs page, and every relative
link or image of every page (outside code blocks) points to a committed file, and to a
heading of it when it names an anchor.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _helpers import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 300
SOURCE = re.compile(r"bench/results/([\w.\-]+\.(?:md|csv|jsonl|json))")
PENDING = "pending re-measurement"
# a number: digits with optional thousands separators (space, thin space, comma), optional
# decimals and exponent; a minus sign only at a word start ("COCO-2014" holds no number)
_DIGITS = r"(?:\d{1,3}(?:[ \u2009\u202f,]\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])"
NUMBER = re.compile(r"(?<![^\s(|])[-−]" + _DIGITS + r"|(?<![\w.\-−])" + _DIGITS, re.I)


def readme_tables(text: str) -> list[dict]:
    """Each Markdown table: its first line number, rows (cells), the paragraph before it and
    the line after it."""
    lines = text.splitlines()
    tables, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1]):
            start, j = i, i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            para = []
            while k >= 0 and lines[k].strip() and not lines[k].startswith("|"):
                para.insert(0, lines[k])
                k -= 1
            after = next((ln for ln in lines[j:j + 3] if ln.strip()), "")
            rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[start + 2:j]]
            tables.append({"line": start + 1, "rows": rows, "before": "\n".join(para), "after": after})
            i = j
        else:
            i += 1
    return tables


def numbers_in(cell: str) -> list[str]:
    """The numbers a person reads in a table cell (code spans and link targets removed)."""
    cell = re.sub(r"`[^`]*`", " ", cell)
    cell = re.sub(r"\]\([^)]*\)", "]", cell)
    cell = cell.replace("*", "")
    return [m.group(0) for m in NUMBER.finditer(cell)]


def _plain(num: str) -> str:
    return re.sub(r"[ \u2009\u202f,]", "", num).replace("−", "-")


def _decimals(num: str) -> int | None:
    """Decimals shown (None for exponent notation: compared as written, to 2 significant)."""
    if "e" in num.lower():
        return None
    return len(num.split(".")[1]) if "." in num else 0


def appears(num: str, file_numbers: set[str], file_values: list[float]) -> bool:
    """``num`` is in the file as written, or some file number rounds to it."""
    plain = _plain(num)
    if plain in file_numbers:
        return True
    value, dec = float(plain), _decimals(plain)
    if dec is None:
        return any(v != 0 and f"{v:.1e}" == f"{value:.1e}" for v in file_values)
    half = 0.5 * 10 ** -dec + 1e-12
    return any(abs(v - value) <= half for v in file_values)


def file_numbers(path: Path) -> tuple[set[str], list[float]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    found = {_plain(m.group(0)) for m in NUMBER.finditer(text)}
    # JSON/CSV floats with many digits are numbers too (NUMBER's boundaries already cover them)
    return found, [float(x) for x in found]


def _page(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


TABLES = [{**t, "page": _page(p)} for p in PAGES for t in readme_tables(p.read_text(encoding="utf-8"))]


def _source(table: dict) -> str | None:
    """The results file the paragraph before names last (the one nearest the table), else
    the one the line after names."""
    before = SOURCE.findall(table["before"])
    if before:
        return before[-1]
    m = SOURCE.search(table["after"])
    return m.group(1) if m else None


def test_the_readme_has_tables():
    assert sum(t["page"] == "README.md" for t in TABLES) >= 5


def test_every_docs_page_is_checked():
    """The docs pages exist, the README links each, and their tables are among those checked."""
    pages = {p.name for p in DOCS.glob("*.md")}
    assert {"runtime.md", "training.md", "export.md", "benchmarks.md", "own-classifier.md", "design.md"} <= pages
    text = README.read_text(encoding="utf-8")
    assert all(f"(docs/{name}" in text for name in pages), "README.md: link every docs page"
    assert sum(t["page"] == "docs/benchmarks.md" for t in TABLES) >= 5


def test_the_readme_is_a_front_door():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}: depth goes to docs/)"


@pytest.mark.parametrize("table", TABLES, ids=[f"{t['page']}:line{t['line']}" for t in TABLES])
def test_table_numbers_come_from_its_source(table):
    where = f"{table['page']} line {table['line']}"
    nums = [n for row in table["rows"] for cell in row for n in numbers_in(cell)]
    if not nums:
        return  # not a measurement
    context = table["before"] + "\n" + table["after"]
    if PENDING in context:
        assert _source(table) is None, f"{where}: a pending table names a results file"
        return
    name = _source(table)
    assert name, (f"{where}: name the table's source (bench/results/FILE) in the "
                  f"paragraph before it or the line after it, or mark it '{PENDING}'")
    path = ROOT / "bench" / "results" / name
    assert path.is_file(), f"{where}: {path} is not committed"
    found, values = file_numbers(path)
    missing = sorted({n for n in nums if not appears(n, found, values)})
    assert not missing, f"{where}: numbers not in bench/results/{name}: {missing}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, code/emphasis marks and punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    out: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _prose(text), re.M):
        slug, n = _slug(heading), 1
        while slug in out:  # a repeated heading gets -1, -2, ...
            slug = f"{_slug(heading)}-{n}"
            n += 1
        out.add(slug)
    return out


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def local_links(path: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", _prose(path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


@pytest.mark.parametrize("page", PAGES, ids=[_page(p) for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for target in local_links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.is_file():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{_page(page)}: links to no file or heading: {broken}"


def test_number_parsing_and_rounding():
    assert numbers_in("**0.852** | 10 644 | 1,666.2× | 47.2 % | `--bench-full` | 9.5e-06 | -2.194 | COCO-2014") == [
        "0.852", "10 644", "1,666.2", "47.2", "9.5e-06", "-2.194"]
    found, values = {"12.47", "0.0000095"}, [12.47, 9.5e-06]
    assert appears("12.5", found, values) and not appears("12.4", found, values)
    assert appears("9.5e-06", found, values)


def test_anchor_slugs():
    assert _slug("Many classes: the top-k graph") == "many-classes-the-top-k-graph"
    assert _slug("Runtime: `runtime-explain`") == "runtime-runtime-explain"
    assert _slug("At the papers' scale") == "at-the-papers-scale"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}
