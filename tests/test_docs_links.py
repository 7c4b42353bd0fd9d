"""Every relative link in README.md, CHANGELOG.md and docs/*.md names a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
#: `[text](target)` and `![alt](target)`, the target up to a space, `#` or `)`
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s#]*)[^)]*\)")


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert page.is_file(), page
    broken = [t for t in _relative_links(page) if not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_the_link_pattern_finds_links():
    page = ROOT / "README.md"
    assert "docs/guide.md" in _relative_links(page) and "reports/sweep_layer3.0.conv1.md" in _relative_links(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_embeds_a_report_figure(page):
    """A figure lives on its report page; the README and docs link to that page instead of showing a copy."""
    embedded = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", page.read_text())
    assert not [t for t in embedded if "reports/" in t], embedded
