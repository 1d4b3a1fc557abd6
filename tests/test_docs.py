"""The README stays a five-minute read, and every relative link in it and in docs/ goes
somewhere: the file exists and, for `#anchor`, one of its headings has that GitHub slug."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slugs(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces
    to hyphens, repeats numbered."""
    found: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in slugs(linked)
        ):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_every_test_the_docs_name_exists() -> None:
    """The Guarantees table and the docs name the test that holds each promise."""
    named = {
        ref
        for page in PAGES
        for ref in re.findall(r"tests/(test_\w+\.py)::(\w+)", page.read_text())
    }
    assert len(named) > 10
    missing = [
        f"{file}::{name}"
        for file, name in sorted(named)
        if not re.search(rf"def {name}\b", (ROOT / "tests" / file).read_text())
    ]
    assert not missing
