"""Every measured number in a Markdown table leads to the raw file that holds it.

A table is *measured* when a cell outside its first column holds a number. Its sources are the
`bench/results/...` paths named in its section (from the previous `#` or `##` heading down to
the table) or in the paragraph right after it: files, folders (every text file below) or
globs. Each source must exist, and each number must appear in one of them, as written or as a
value that rounds to it at the precision shown (fractions count as percentages: 0.97483 backs
97.48%). A table whose text says "not reproduced" names no source and promises nothing; so
does a row that says so. Small
integers (seeds, epochs, batch sizes, thread counts: fewer than 3 digits) are settings, and
cells of prose (more than 8 words) descriptions; neither is checked.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = re.compile(r"bench/results/[A-Za-z0-9_./*{},+=-]*[A-Za-z0-9_/*}]")
# not inside a word, path, version or address; a ratio's "x" (2.11x) ends a number
_EDGE = r"(?<![\w.^/-])", r"(?!(?!x\b)[\w/]|\.\d)"
NUMBER = re.compile(
    rf"{_EDGE[0]}[-−]?\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?{_EDGE[1]}"  # 26,620
    rf"|{_EDGE[0]}[-−]?\d+(?:\.\d+)?{_EDGE[1]}"
)
SEPARATOR = re.compile(r"^\|[\s:|-]+\|\s*$")
TEXT_SUFFIXES = {".txt", ".json", ".jsonl", ".csv", ".md", ".log", ".html", ".toml", ".tsv"}
NOT_REPRODUCED = "not reproduced"
PROSE_WORDS = 8


@dataclass
class Table:
    doc: Path
    line: int  # 1-based line of the header row
    rows: list[list[str]]
    context: str
    sources: list[str] = field(default_factory=list)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def tables(doc: Path) -> list[Table]:
    lines = doc.read_text().splitlines()
    fenced, inside = set(), False
    for n, line in enumerate(lines):
        if line.startswith("```"):
            inside = not inside
        elif inside:
            fenced.add(n)
    found, i = [], 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and SEPARATOR.match(lines[i + 1]) and "-" in lines[i + 1]:
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            before = i - 1
            while before >= 0 and (before in fenced or not re.match(r"##? ", lines[before])):
                before -= 1
            after = end
            while after < len(lines) and not lines[after].strip():
                after += 1
            while (
                after < len(lines)
                and lines[after].strip()
                and not lines[after].startswith(("#", "|"))
            ):
                after += 1
            context = "\n".join(lines[before + 1 : i] + lines[end:after])
            rows = [[c.strip() for c in row.strip("|").split("|")] for row in lines[i + 2 : end]]
            table = Table(doc, i + 1, rows, context)
            table.sources = sorted(set(SOURCE.findall(context)))
            found.append(table)
            i = end
        else:
            i += 1
    return found


def measured_numbers(table: Table) -> list[str]:
    numbers = []
    for row in table.rows:
        if any(NOT_REPRODUCED in cell.lower() for cell in row):
            continue  # a row that says so promises nothing
        for cell in row[1:]:
            cell = re.sub(r"`[^`]*`", "", cell)  # code (commands, options) is not a measurement
            if len(cell.split()) > PROSE_WORDS:
                continue  # a description, not a figure
            for token in NUMBER.findall(cell):
                digits = token.replace(",", "").lstrip("-−")
                if "." not in digits and len(digits) < 3:
                    continue
                numbers.append(token)
    return numbers


def _expand(pattern: str, root: Path) -> list[str]:
    braces = re.search(r"\{([^}]*)\}", pattern)
    if braces:
        return [
            path
            for option in braces.group(1).split(",")
            for path in _expand(pattern[: braces.start()] + option + pattern[braces.end() :], root)
        ]
    return glob.glob(str(root / pattern.rstrip(".")))


def source_files(source: str, root: Path) -> list[Path]:
    files = []
    for match in _expand(source, root):
        path = Path(match)
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.suffix in TEXT_SUFFIXES]
        elif path.is_file():
            files.append(path)
    return files


def _values(text: str) -> set[float]:
    return {float(t.replace(",", "").replace("−", "-")) for t in NUMBER.findall(text)}


def backed(token: str, text: str, values: set[float]) -> bool:
    plain = token.replace(",", "").replace("−", "-")
    if plain in text or token in text:
        return True
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    target = abs(float(plain))
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(
        abs(abs(value) * scale - target) <= tolerance for value in values for scale in (1, 100)
    )


def problems(table: Table, root: Path = ROOT) -> list[str]:
    where = f"{table.doc.relative_to(root)}:{table.line}"
    numbers = measured_numbers(table)
    if not numbers or NOT_REPRODUCED in table.context.lower():
        return []
    if not table.sources:
        return [f"{where}: a measured table that names no bench/results file"]
    missing = [s for s in table.sources if not source_files(s, root)]
    if missing:
        return [f"{where}: names {', '.join(missing)}, which holds no file"]
    files = [p for s in table.sources for p in source_files(s, root)]
    text = "\n".join(p.read_text(errors="replace") for p in files)
    values = _values(text)
    unbacked = [n for n in numbers if not backed(n, text, values)]
    if unbacked:
        return [f"{where}: not in {', '.join(table.sources)}: {', '.join(unbacked[:8])}"]
    return []


def all_problems(root: Path = ROOT) -> list[str]:
    return [p for doc in documents(root) for t in tables(doc) for p in problems(t, root)]


if __name__ == "__main__":
    for problem in all_problems():
        print(problem)
