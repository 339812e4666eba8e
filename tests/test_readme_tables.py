"""Every number in a table of the README or a docs/ page comes from a committed file the
table names; the README stays a front door and its links lead somewhere.

Pages: ``README.md`` and every ``docs/*.md``. Rules for each table (the pages' convention):

* the paragraph right before a table, or the line right after it, names its source file as
  ``bench/results/NAME``; the file must exist;
* every number in the table's cells (thousands separators and ``%``/``×`` dropped; code
  spans, links and the header row skipped) appears in that file, as written or as a file
  number rounded to the decimals the page shows;
* a cell with several numbers (a value with its ratios) finds them all on one line of a
  Markdown/CSV source (one measurement, one row), and a table whose header is a header of
  its Markdown source is a copy of it: each row's values are one of the source's rows, cell
  for cell (its label may be reworded);
* a table whose numbers have no committed source yet says ``pending re-measurement`` in
  that paragraph, and must then name no bench/results file (until it is measured; the
  command is in ``bench/make_results.py``);
* a table without numbers (e.g. the install extras) needs no source.

Prose is held to the same rule for its measured numbers: a number written with decimals
(``0.852``, ``4.6 ms``, ``1.28×``, ``98.4 %``), or a whole number with a unit of time, rate,
size or ratio (``503 s``, ``820 FPS``), outside code spans, tables and code blocks is a
measurement, and its paragraph (a block of lines between blank lines; a list is one block)
names the committed ``bench/results/`` file(s) it comes from, one of which holds it (as
written or rounded). Settings, goals and versions are written as code (```--smooth 0.5```,
```onnxsim 0.8.1```); sizes and counts (``64 px``, ``10 epochs``) are not checked.

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
            tables.append({"line": start + 1, "rows": rows, "before": "\n".join(para), "after": after,
                           "header": _cells(lines[start])})
            i = j
        else:
            i += 1
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


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
    # JSON/CSV floats with many digits are numbers too (NUMBER's boundaries already cover them)
    return file_numbers_of(path.read_text(encoding="utf-8", errors="replace"))


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
    apart = _cells_apart(table, path)
    assert not apart, f"{where}: these cells' numbers are not on one line of bench/results/{name}: {apart}"
    moved = _rows_moved(table, path)
    assert not moved, f"{where}: a copy of a bench/results/{name} table, but these rows differ from it: {moved}"


def _cells_apart(table: dict, path: Path) -> list[str]:
    """Cells with several numbers (a value with its ratios) whose numbers appear on no single
    line of a Markdown/CSV source: a cell is one measurement, so its numbers share a row."""
    if path.suffix not in (".md", ".csv"):
        return []
    lines = [file_numbers_of(line) for line in path.read_text(encoding="utf-8").splitlines()]
    bad = []
    for row in table["rows"]:
        for cell in row:
            nums = numbers_in(cell)
            if len(nums) > 1 and not any(all(appears(n, f, v) for n in nums) for f, v in lines if f):
                bad.append(cell)
    return bad


def _rows_moved(table: dict, path: Path) -> list[str]:
    """A table whose header is a table header of its Markdown source is a copy of that table:
    each of its rows must be one of the source's rows, cell for cell (the same row and column)."""
    if path.suffix != ".md":
        return []
    source_lines = path.read_text(encoding="utf-8").splitlines()
    if table["header"] not in [_cells(ln) for ln in source_lines if ln.startswith("|")]:
        return []
    def values(cells: list[str]) -> tuple[str, ...]:  # the row's label may be reworded, its values not
        return tuple(c.replace("*", "") for c in cells[1:])

    source_rows = {values(_cells(ln)) for ln in source_lines if ln.startswith("|")}
    return [" | ".join(r) for r in table["rows"] if values(r) not in source_rows]


def prose_paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each paragraph of a page: blocks of lines between blank
    lines, outside fenced code blocks, tables and headings."""
    out, block, start, fence = [], [], 0, False
    for n, line in enumerate(text.splitlines() + [""], 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        if not line.strip() or line.startswith(("|", "#")):
            if block:
                out.append((start, "\n".join(block)))
            block = []
            continue
        if not block:
            start = n
        block.append(line)
    return out


UNIT = re.compile(r"\s?(?:ms|FPS|s|MB|MiB|GB|×|%)(?![\w])")


def measured_numbers(paragraph: str) -> list[str]:
    """The measurements of a paragraph: numbers written with decimals, and whole numbers with a
    unit of time, rate, size or ratio (``503 s``, ``820 FPS``, ``12×``); sizes and counts
    (``64 px``, ``10 epochs``) are not, nor references to a paper's parts (``Sec. 3.3``)."""
    text = re.sub(r"\b(?:Sec|Eq|App|Fig|Table)\.?\s+[A-Z]?\d+(?:\.\d+)*", " ", paragraph)
    text = re.sub(r"\]\([^)]*\)", "]", re.sub(r"`[^`]*`", " ", text)).replace("*", "")
    return [m.group(0) for m in NUMBER.finditer(text)
            if "." in m.group(0) or "e" in m.group(0).lower() or UNIT.match(text, m.end())]


def prose_problems(text: str) -> list[str]:
    """Paragraphs with measured numbers that no ``bench/results`` file they name holds."""
    problems = []
    for line, para in prose_paragraphs(text):
        nums = measured_numbers(para)
        if not nums:
            continue
        names = [n for n in dict.fromkeys(SOURCE.findall(para)) if (ROOT / "bench" / "results" / n).is_file()]
        held = [file_numbers(ROOT / "bench" / "results" / n) for n in names]
        missing = [n for n in nums if not any(appears(n, f, v) for f, v in held)]
        if missing:
            where = f"cites {', '.join(names)}" if names else "cites no bench/results file"
            problems.append(f"line {line} ({where}): {missing}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[_page(p) for p in PAGES])
def test_prose_numbers_come_from_a_cited_file(page):
    problems = prose_problems(page.read_text(encoding="utf-8"))
    assert not problems, (f"{_page(page)}: measured numbers in prose must be in a bench/results file their "
                          f"paragraph names (settings go in code spans): {problems}")


def test_the_prose_check_bites():
    assert prose_paragraphs("a\nb\n\n```\nx 1.5\n```\n| t | 2.5 |\n# H 3.5\nc 4.5\n") == [(1, "a\nb"), (9, "c 4.5")]
    assert measured_numbers("6 classes, 64 px, IoU 0.852, `--smooth 0.5`, 1.28×, 9.5e-06, 98.4 %, Sec. 3.3, "
                            "10 epochs in 503 s, 820 FPS, 2 652 ms") == [
        "0.852", "1.28", "9.5e-06", "98.4", "503", "820", "2 652"]
    cited = "IoU 0.852 and per-class 0.773 (bench/results/shapes_test.md)."
    assert prose_problems(cited) == []
    assert prose_problems("IoU 0.852 somewhere.") == ["line 1 (cites no bench/results file): ['0.852']"]
    assert prose_problems("IoU 0.999 (bench/results/shapes_test.md).") == [
        "line 1 (cites shapes_test.md): ['0.999']"]


def file_numbers_of(text: str) -> tuple[set[str], list[float]]:
    found = {_plain(m.group(0)) for m in NUMBER.finditer(text)}
    return found, [float(x) for x in found]


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


def test_the_row_and_cell_checks_bite(tmp_path):
    """A copied table with two values swapped between rows, and a cell whose value and ratio
    come from different rows, are caught although every number is in the file."""
    src = tmp_path / "r.md"
    src.write_text("| method | ms | × |\n|---|---|---|\n| a | 1.50 | 1.0× |\n| b | 3.00 | 2.0× |\n")
    copy = {"header": ["method", "ms", "×"], "rows": [["a", "3.00", "1.0×"], ["b", "1.50", "2.0×"]]}
    assert _rows_moved(copy, src) == ["a | 3.00 | 1.0×", "b | 1.50 | 2.0×"]
    assert _rows_moved({**copy, "rows": [["A (renamed)", "**1.50**", "1.0×"]]}, src) == []
    merged = {"header": ["x", "y"], "rows": [["a", "1.50 (2.0×)"], ["b", "3.00 (2.0×)"]]}
    assert _cells_apart(merged, src) == ["1.50 (2.0×)"]
