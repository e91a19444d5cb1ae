"""No figure in the documentation is typed by hand: each one is rendered from a script's JSON.

The measured figures of README.md and docs/*.md live in generated blocks,
``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``, which ``bench/report.py`` renders from
``docs/results/NAME.json`` (written by the script, with its exact command and machine). Checked here:

1. every block is what its JSON renders (``bench/report.py --check``), and every JSON has a block;
2. every JSON names its command and its machine;
3. no figure stands outside those blocks. The rule, outside fenced code and `inline code` (settings
   and commands) and outside the blocks:

   * a figure is a number with a unit of what the scripts measure: ``ms``, ``s``, ``min``, ``img/s``,
     ``clips/s``, ``samples/s``, ``KiB``, ``MiB``, ``GiB``, ``kB``, ``MB``, ``GFLOP``, ``TFLOP/s``, a
     speed ratio glued to ``x`` (``1.4x``, not the shape ``16x224``), or a percentage with a decimal
     point (``96.6%``; a whole percentage in prose is a setting: "10% of the labels"); unless it follows
     a word of a limit (``within``, ``at most``, ``up to``, ``under``, ``every``, ``after``, ``timeout``):
     "exits within 30 s" is a bound a test asserts, not a measurement;
   * in a Markdown table, also a cell that starts with a number with a decimal point or a unit
     (``85.7``, ``84.5 (84.5)``, ``96%``), or with any number when its column's header has a unit
     (``| ms/step |``). Whole numbers in other columns are counts, sizes or exit codes, and a column
     whose header names a version (``CUDA``, ``version``) holds versions;
   * the paper's numbers are not measured here: they stand between ``<!-- paper -->`` and
     ``<!-- /paper -->`` (the tables of top-1 accuracies and recipe settings in README.md and
     docs/recipes.md) and are not figures.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_report()

UNITS = r"ms|s|min|img/s|clips/s|samples/s|KiB|MiB|GiB|kB|MB|GFLOP|TFLOP/s"
NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
LEFT = r"(?<![\w.\-/])"  # not inside a word, a version (4.0 of cc-by-nc-4.0), a path or another number
PROSE_FIGURE = re.compile(rf"{LEFT}(?:{NUMBER}\s?(?:{UNITS})(?![\w/])|{NUMBER}x(?![\w/])|\d+\.\d+\s?%)")
CELL_FIGURE = re.compile(rf"^(?P<number>{NUMBER})(?P<unit>\s?(?:{UNITS})(?![\w/])|x(?![\w/])|\s?%)?")
HEADER_UNIT = re.compile(rf"(?<![\w])(?:{UNITS}|%)(?![\w])")
VERSION_HEADER = re.compile(r"\bCUDA\b|version", re.I)
LIMIT = re.compile(r"(?:\bwithin|\bat most|\bup to|\bunder|\bevery|\bafter|\btimeout)\s*$", re.I)
REGION = re.compile(r"^<!-- (/?)(results:[\w-]+|paper) -->$")


def cells(row: str) -> list[str]:
    """The cells of a table row, with inline code replaced by ``code`` (its pipes are not separators)."""
    row = re.sub(r"`[^`]*`", "code", row.strip())
    return [c.strip() for c in row.strip("|").split("|")]


def figures(text: str) -> list[tuple[int, str, str]]:
    """``(line number, figure, line)`` of every figure outside code, results blocks and paper blocks."""
    found, region, fence, header = [], None, False, None
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        marker = REGION.match(line.strip())
        if marker and not fence:
            closing, name = marker.groups()
            assert (region == name) if closing else region is None, \
                f"line {number}: {line.strip()} inside or without {region or 'an opening marker'}"
            region, header = (None if closing else name), None
            continue
        if re.match(r"\s*```", line):
            fence = not fence
            continue
        if fence or region:
            header = header if line.startswith("|") else None
            continue
        prose = re.sub(r"`[^`]*`", "", line)
        hits = [m.group(0) for m in PROSE_FIGURE.finditer(prose) if not LIMIT.search(prose[:m.start()])]
        if line.startswith("|"):
            row = cells(line)
            if header is None:
                header = row  # the first row of a table
            elif not all(re.fullmatch(r":?-+:?", c) for c in row):
                for i, cell in enumerate(row):
                    head = header[i] if i < len(header) else ""
                    m = CELL_FIGURE.match(cell.replace("*", ""))
                    if m and not VERSION_HEADER.search(head) and (
                            "." in m.group("number") or m.group("unit") or HEADER_UNIT.search(head)):
                        hits.append(m.group(0))
        else:
            header = None
        found += [(number, h, line) for h in dict.fromkeys(hits)]
    assert region is None, f"<!-- {region} --> is never closed"
    return found


def documents(root: Path = ROOT) -> list[Path]:
    return report.documents(root)


# ------------------------------------------------------------------------------------------ the rule itself
def test_the_rule_finds_figures_and_only_figures():
    text = "\n".join([
        "One step takes 12.5 ms, or 3 s in all, 4.2 img/s, 310 MiB; ours is 1.4x faster at 96.6% top-1.",
        "Not figures: 16x224 clips, 8x8 windows, 10% of the labels, cc-by-nc-4.0, `lr 8e-4`, `12 ms`,",
        "exits within 30 s, saves every 5 min.",
        "",
        "| model | 224 px | epochs | ms/step | CUDA |",
        "|---|---:|---:|---:|---|",
        "| Hiera-B | 84.5 (84.5) | 100 | 93 | 12.6 |",
        "| `a|b` 0.5 | **96%** (960/1000) | 5 | - | none |",
        "",
        "```bash",
        "python bench/memory.py  # 12.5 ms",
        "```",
        "<!-- paper -->",
        "| 85.7 | 86.0 |",
        "<!-- /paper -->",
        "<!-- results:x -->",
        "took 9.9 ms",
        "<!-- /results:x -->",
    ])
    assert [(n, f) for n, f, _ in figures(text)] == [
        (1, "12.5 ms"), (1, "3 s"), (1, "4.2 img/s"), (1, "310 MiB"), (1, "1.4x"), (1, "96.6%"),
        (7, "84.5"), (7, "93"), (8, "96%")]
    with pytest.raises(AssertionError, match="never closed"):
        figures("<!-- paper -->\n| 85.7 |")


# ------------------------------------------------------------------------------------------ the documents
def test_results_blocks_match_their_json():
    """``python bench/report.py --check``: every block is what its JSON renders, with its machine and command."""
    stale = report.stale_blocks(ROOT)
    assert not stale, "\n".join(stale)


def test_every_result_has_a_block():
    names = set(report.blocks(ROOT))
    written = {p.stem for p in (ROOT / report.RESULTS).glob("*.json")}
    assert written, "docs/results/ holds no JSON"
    assert written <= names, f"docs/results/ JSON that no document shows: {sorted(written - names)}"


@pytest.mark.parametrize("path", sorted((ROOT / report.RESULTS).glob("*.json")), ids=lambda p: p.name)
def test_every_result_names_its_command_and_machine(path):
    r = json.loads(path.read_text())
    assert isinstance(r.get("command"), str) and re.match(r"(python|make) \S", r["command"]), \
        f"{path.name}: no command as typed from the repository root"
    machine = r.get("machine")
    assert isinstance(machine, dict), f"{path.name}: no machine"
    for key in ("cpu", "cpu_cores", "gpu", "torch", "python", "date"):
        assert key in machine, f"{path.name}: the machine has no {key!r}"
    assert machine["cpu_cores"] and machine["torch"] and machine["date"]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_figure_outside_a_results_block(path):
    rel = str(path.relative_to(ROOT))
    found = figures(path.read_text())
    assert not found, (f"{rel}: figures typed by hand (put them in a results block rendered by bench/report.py, "
                       f"or mark the paper's numbers <!-- paper -->):\n"
                       + "\n".join(f"  line {n}: {f!r} in {line.strip()[:100]}" for n, f, line in found))

