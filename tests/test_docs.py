"""The documentation: the MkDocs pages build strictly, the README stays a short front page whose
links resolve, and the README's first-hour claims that a test can check hold.

The strict build (``mkdocs.yml``: ``strict: true`` and every validation at ``warn``) fails on a link to a
missing page, a missing anchor, or a page left out of the nav; a second build of a copy with a broken
link shows that it does.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmap.cli import main as cmap_main

from .conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 300


def build_docs(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``: its exit status and its log."""
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(config),
        "--site-dir",
        str(site),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_docs_build_strictly(tmp_path):
    built = build_docs(REPO / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr, built.stderr[-3000:]
    for page in sorted(DOCS.glob("*.md")):
        name = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / name).is_file(), f"{page.name} was not built"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("[a missing page](no_such_page.md)", "no_such_page.md"),
        ("[a missing anchor](training.md#no-such-section)", "#no-such-section"),
        ("[a file outside docs](../README.md)", "../README.md"),
    ],
)
def test_the_strict_build_fails_on_a_broken_reference(tmp_path, breakage, message):
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + f"\n{breakage}\n")
    built = build_docs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert message in built.stderr, built.stderr[-3000:]


def test_the_strict_build_fails_on_a_page_left_out_of_the_nav(tmp_path):
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "docs" / "orphan.md").write_text("# A page no one links\n")
    built = build_docs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert "orphan.md" in built.stderr, built.stderr[-3000:]


def test_the_readme_is_a_short_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines: move long sections into docs/"
    headings = [line for line in lines if line.startswith("## ")]
    assert "## The two commands" in headings and "## Results" in headings and "## Layout" in headings, headings


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and MkDocs' toc) gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lstrip("#").strip().lower())
    return text.replace(" ", "-")


def test_github_anchor():
    assert github_anchor("## Checkpoints, resuming, pretrained weights") == "checkpoints-resuming-pretrained-weights"
    assert github_anchor("# Your own table (`cmap convert table`)") == "your-own-table-cmap-convert-table"


def test_the_readmes_links_resolve():
    """Every relative link of the README names a file of the repository, and its anchor a heading there."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local), local
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path if path else README
        assert target.is_file(), f"README.md links {link}: no file {target}"
        if anchor:
            headings = [line for line in target.read_text().splitlines() if line.startswith("#")]
            assert anchor in {github_anchor(heading) for heading in headings}, (
                f"README.md links {link}: no such heading"
            )


def test_the_paths_the_documents_name_exist():
    """Files and folders of the repository named in the README and the pages (``cmap/mapping/``,
    ``configs/default.yaml``, ...) exist: a module moved or renamed shows here, not in a user's shell."""
    pattern = r"(?<![\w./-])((?:cmap|configs|benchmarks|scripts|tests|docs)/[\w./-]*\w/?)"
    named = {
        (page.name, path) for page in [README, *DOCS.glob("*.md")] for path in re.findall(pattern, page.read_text())
    }
    assert len(named) > 50, named
    missing = sorted((page, path) for page, path in named if not (REPO / path).exists())
    assert not missing, missing


def test_the_readmes_results_table_is_what_the_benchmark_writes(tmp_path, monkeypatch):
    """``benchmarks/accuracy.py`` rewrites the README's table between its markers: from the committed
    results it writes the table the README holds, character for character."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import accuracy

    results = json.loads((REPO / "benchmarks" / "results" / "accuracy.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text().replace("| **0.7680 ± 0.0014** |", "| **0.1 ± 0.2** |"))
    accuracy.update_readme(readme, accuracy.readme_tables(results))
    assert readme.read_text() == README.read_text()


def bash_lines(document: Path) -> list[str]:
    """The lines of ``document``'s bash blocks, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def test_the_readme_says_to_activate_the_venv():
    """The setup installs ``cmap`` and ``tensorboard`` into .venv/bin only: the README's first block
    activates it before any later command uses them (else "command not found")."""
    lines = [line for line in bash_lines(README) if line and not line.startswith("#")]
    assert lines[:3] == ["bash scripts/main.sh", "bash scripts/test.sh", "source .venv/bin/activate"], lines[:4]
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "python3 -m venv .venv" in setup and ".venv/bin/python -m pip install" in setup


def test_scripts_main_passes_threads_on_to_cmap_fit(monkeypatch, capsys):
    """The README's advice for a shared CPU, ``bash scripts/main.sh --threads 1``: main.sh passes its
    arguments to ``cmap fit``, and that command parses with them."""
    readme = README.read_text()
    assert "bash scripts/main.sh --threads 1" in readme
    fit = [
        line
        for line in (REPO / "scripts" / "main.sh").read_text().splitlines()
        if "cmap fit" in line and not line.startswith("#")
    ]
    assert len(fit) == 1 and fit[0].rstrip().endswith('"$@"'), fit
    words = shlex.split(fit[0].replace('"$@"', ""))
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit:
        cmap_main([*words[words.index("fit") :], "--threads", "1", "--print_config"])
    assert exit.value.code in (0, None), capsys.readouterr().err[-2000:]
    assert "threads: 1" in capsys.readouterr().out


def test_the_attention_maps_row_names_the_encoders_that_have_them():
    """TensorBoard's attention maps come only from encoders with attention weights to show
    (``forward_with_attention``): the Training page's row names exactly those."""
    from cmap.ml import encoders

    having = {
        name
        for name, encoder in vars(encoders).items()
        if isinstance(encoder, type) and issubclass(encoder, encoders.SeriesEncoder)
        if hasattr(encoder, "forward_with_attention")
    }
    rows = [line for line in (DOCS / "training.md").read_text().splitlines() if "`attention/layer_N`" in line]
    assert len(rows) == 1, rows
    named = set(re.findall(r"`(\w+Encoder)`", rows[0]))
    assert having and named == having, (named, having)
    assert "TempCNN" in rows[0] and "log none" in rows[0]
