"""The docs-truth check: every measured table in README.md and docs/ leads to its raw file."""

from __future__ import annotations

import shutil
from pathlib import Path

from docs_truth import ROOT, all_problems


def _copy_docs(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "bench" / "results", tmp_path / "bench" / "results")
    return tmp_path


def test_every_measured_table_names_a_raw_file_that_holds_its_numbers():
    assert all_problems() == []


def test_removing_a_raw_file_fails_the_check(tmp_path):
    root = _copy_docs(tmp_path)
    (root / "bench" / "results" / "quality_fashion.txt").unlink()
    (problem,) = all_problems(root)
    assert problem.startswith("docs/search.md:") and "quality_fashion.txt" in problem


def test_a_number_missing_from_its_raw_file_fails_the_check(tmp_path):
    root = _copy_docs(tmp_path)
    raw = root / "bench" / "results" / "step_cost_lenet.txt"
    raw.write_text("".join("#" if ch.isdigit() else ch for ch in raw.read_text()))
    problems = all_problems(root)
    assert len(problems) == 2  # the two step-cost tables of docs/search.md, nothing else
    for problem in problems:
        assert problem.startswith("docs/search.md:")
        assert "not in bench/results/" in problem and "step_cost_lenet.txt:" in problem
