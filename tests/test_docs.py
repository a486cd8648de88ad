"""The README stays a short manual, its test command runs as people run pytest, and the documents speak of the
project, never of how it was built."""
import json
import os
import subprocess
import sys

import pytest

from helpers import HANG_TIMEOUT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_LIMIT = 14 * 1024
# Phrases about the making of the project rather than the project; `../shared` is a folder next to the checkout
# of the machines it was built on, which no user has.
FORBIDDEN = ("this session", "previous session", "earlier session", "our build machines", "../shared")


def documents():
    yield os.path.join(REPO, "README.md")
    for root, _, names in os.walk(os.path.join(REPO, "docs")):
        for name in sorted(names):
            if name.endswith((".md", ".json", ".py", ".txt")):
                yield os.path.join(root, name)


def test_the_readme_stays_short():
    assert os.path.getsize(os.path.join(REPO, "README.md")) <= README_LIMIT


def test_documents_speak_of_the_project_not_of_how_it_was_built():
    found = [(os.path.relpath(path, REPO), phrase) for path in documents()
             for phrase in FORBIDDEN if phrase in open(path, encoding="utf-8").read().lower()]
    assert found == []


@pytest.mark.slow
def test_the_suite_runs_without_pytests_cache_and_with_a_cache_folder_elsewhere(tmp_path):
    """`-p no:cacheprovider` (read-only checkouts, many CI set-ups) and `-o cache_dir=DIR`: the suite's own hooks
    (tests/conftest.py) run either way; one short file, in one process, is enough to reach them."""
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "tests/test_docs.py", "-k", "not cache"]
    without = subprocess.run([*command, "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True,
                             timeout=HANG_TIMEOUT)
    assert without.returncode == 0 and "INTERNALERROR" not in without.stdout + without.stderr, without.stdout
    elsewhere = subprocess.run([*command, "-o", f"cache_dir={tmp_path / 'cache'}"], cwd=REPO, capture_output=True,
                               text=True, timeout=HANG_TIMEOUT)
    assert elsewhere.returncode == 0, elsewhere.stdout
    assert (tmp_path / "cache" / "v" / "cache" / "nodeids").exists()


def recorded_values(record, prefix=""):
    """(dotted key, value) of every leaf of a JSON record: `config.output_dir`, `runs.singlestage.run_dir`, ..."""
    if isinstance(record, dict):
        for key, value in record.items():
            yield from recorded_values(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(record, list):
        for index, value in enumerate(record):
            yield from recorded_values(value, f"{prefix}[{index}]")
    else:
        yield prefix, record


def test_every_committed_record_names_relative_paths_and_its_edits_are_stated_as_they_are():
    """No record under docs/results/ holds an absolute path of the machine it ran on; where paths were rewritten,
    docs/results.md's table of edits says so, and each record holds the value that table gives."""
    results = os.path.join(REPO, "docs", "results")
    absolute = []
    for root, _, names in os.walk(results):
        for name in sorted(n for n in names if n.endswith(".json")):
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                values = dict(recorded_values(json.load(f)))
            absolute += [(os.path.relpath(path, results), key) for key, value in values.items()
                         if isinstance(value, str) and os.path.isabs(value)]
    assert absolute == []
    text = open(os.path.join(REPO, "docs", "results.md"), encoding="utf-8").read()
    edits = text[text.index("**Edits to the records.**"):].split("\n\n")[1]
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in edits.splitlines()[2:]]
    assert len(rows) >= 1
    for record, key, as_written, as_kept in rows:
        with open(os.path.join(results, record), encoding="utf-8") as f:
            assert dict(recorded_values(json.load(f)))[key] == as_kept != as_written, (record, key)
