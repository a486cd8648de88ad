"""The README stays a short manual, and the documents speak of the project, never of how it was built."""
import os

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
