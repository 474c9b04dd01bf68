"""The README works as written: every Python snippet runs as it stands, every relative link (README
and docs/) resolves inside the repository, and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_three_snippets():
    assert len(snippets()) == 3


@pytest.mark.parametrize("index", range(len(snippets())), ids=lambda i: f"snippet{i + 1}")
def test_readme_snippet_runs_as_written(index, tmp_path, monkeypatch, capsys, recwarn):
    pytest.importorskip("diffusers")
    monkeypatch.chdir(tmp_path)  # a snippet must not rely on the repository's folders
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(snippets()[index], f"README snippet {index + 1}", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(before)
    assert "target" in capsys.readouterr().out  # each prints its run's statistics
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning) and "sdsv" in str(w.message)]


def _relative_links(md: Path) -> list[tuple[str, Path]]:
    links = []
    for target in LINK.findall(md.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        links.append((target, (md.parent / target.split("#")[0]).resolve()))
    return links


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(md):
    for target, path in _relative_links(md):
        assert path.exists(), f"{md.name}: link {target} -> {path} does not exist"
        assert ROOT in path.parents or path == ROOT, f"{md.name}: link {target} leaves the repository"


def _anchors(md: Path) -> set[str]:
    """GitHub's heading slugs: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"(?m)^#+ (.*)$", md.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: p.name)
def test_anchors_name_a_heading(md):
    for target in LINK.findall(md.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or "#" not in target:
            continue
        page, anchor = target.split("#", 1)
        page = (md.parent / page).resolve() if page else md
        if page.suffix == ".md" and page.exists():
            assert anchor in _anchors(page), f"{md.name}: no heading for {target}"


def test_readme_is_short_and_self_contained():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) < 12 * 1024
    assert "../shared" not in text and "METHOD.md" not in text
