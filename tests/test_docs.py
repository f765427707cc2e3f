"""The contract lives in the project (issue 14 class 11): the README links docs/, not a file outside
the repository, and what the docs state (the default url_pattern and its examples, the reject
reasons, the metric names) is what the code does."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import REPO

DOCS = REPO / "docs"


def test_the_readme_links_every_page_of_docs_and_nothing_outside_the_project():
    # case: docs-in-the-project
    readme = (REPO / "README.md").read_text()
    assert "SPEC.md" not in readme and "../shared/SPEC" not in readme
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert linked, "the README links no page of docs/"
    for link in linked:
        assert (REPO / link).is_file(), link
    for page in DOCS.glob("*.md"):
        assert f"docs/{page.name}" in linked, page.name
    for page in DOCS.glob("*.md"):  # links between the pages resolve too
        for target in re.findall(r"\]\(([a-z-]+\.md)", page.read_text()):
            assert (DOCS / target).is_file(), (page.name, target)


def url_examples() -> list[tuple[str, str | None, str | None]]:
    """The rows of the url | course | lesson table in docs/log-format.md."""
    rows = []
    for line in (DOCS / "log-format.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and ("`" in cells[1] or "not a lesson" in cells[1]):
            course = cells[1].strip("`") if cells[1].startswith("`") else None
            lesson = cells[2].strip("`") if cells[2].startswith("`") else None
            rows.append((cells[0].strip("`"), course, lesson))
    return rows


def test_the_default_url_pattern_and_its_examples_are_what_deeprec_does():
    # case: docs-url-pattern-examples
    from deeprec.data.ratings.config import DEFAULT_URL_PATTERN
    from deeprec.data.ratings.events import _url_lessons

    assert DEFAULT_URL_PATTERN in (DOCS / "log-format.md").read_text()
    examples = url_examples()
    assert len(examples) >= 6 and any(c is None for _, c, _ in examples)
    courses, lessons = _url_lessons(np.asarray([u for u, _, _ in examples], dtype=object), DEFAULT_URL_PATTERN)
    assert [(u, c, l) for (u, _, _), c, l in zip(examples, courses, lessons)] == examples


@pytest.mark.parametrize("page, names", [
    ("log-format.md", ["missing_user", "bad_timestamp", "duplicate"]),
    ("interactions.md", ["missing_user", "missing_item", "bad_rating", "bad_timestamp", "duplicate", "repeated_pair"]),
])
def test_the_docs_name_every_reject_reason(page, names):
    # case: docs-reject-reasons; the event reasons are the pipeline's own list
    from deeprec.data.ratings.events import REJECT_REASONS

    if page == "log-format.md":
        assert list(REJECT_REASONS) == names
    text = (DOCS / page).read_text()
    for name in names:
        assert f"`{name}`" in text, name


def test_the_docs_define_every_metric_the_evaluation_returns():
    # case: docs-metrics
    import torch

    from deeprec.evaluation import evaluate_topk

    metrics = evaluate_topk(torch.tensor([[0, 1]]), [[1]], ks=(2,), n_items=3)
    names = {key.split("@")[0] for key in metrics if "@" in key}
    text = (DOCS / "metrics.md").read_text()
    for name in names:
        assert f"`{name}@k`" in text, name
