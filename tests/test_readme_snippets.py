"""Every ```python block of README.md runs as written.

The rule: the snippets under one `##` heading run in order in one fresh namespace, so a snippet may use what
an earlier snippet of its own section defined (the prose before it says so, e.g. "continuing the snippet
above"); the first snippet of a section is self-contained. Nothing is shared across sections, and nothing
is downloaded: the snippets use the embedded MiniLM (`load_minilm`), the shipped corpora (`load_corpus`) and
the demo's `"default"` classifier, which this module provides without running the demo: `JAXATTR_CACHE_DIR`
points at a temporary cache holding the MiniLM (seeded, untrained head) saved as `default-classifier`.

A block opened with ```python no-test is shown but not run (e.g. a multi-host `jax.distributed` start); each
such block must be listed in `NOT_RUN` (its heading and first line), so skipping one is a visible decision.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NO_TEST = "no-test"  # ```python no-test: shown, never run
NOT_RUN: frozenset[tuple[str, str]] = frozenset()  # (section heading, first line) of every no-test block
FENCE = re.compile(r"^\s*```(?P<info>.*)$")
HEADING = re.compile(r"^(#{1,2})\s+(?P<title>.+?)\s*$")


@dataclass(frozen=True)
class Snippet:
    heading: str  # the `#`/`##` heading it sits under
    line: int  # README line of the opening fence (1-based)
    code: str
    run: bool  # False for ```python no-test

    @property
    def first_line(self) -> str:
        return self.code.strip().splitlines()[0] if self.code.strip() else ""


def snippets(text: str) -> list[Snippet]:
    """The ```python blocks of a Markdown text in order, each with the heading above it (fences may be indented;
    `#` lines inside any fenced block are code, not headings)."""
    out, heading, block, lines = [], "(top)", None, text.splitlines()
    for i, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if block is None:
            if fence:
                words = fence["info"].split()
                block = {"lang": words[0] if words else "", "flags": words[1:], "line": i, "body": [],
                         "indent": len(line) - len(line.lstrip())}
            elif m := HEADING.match(line):
                heading = m["title"]
        elif fence and not fence["info"].strip():
            if block["lang"] == "python":
                body = [ln[block["indent"]:] if ln[:block["indent"]].isspace() else ln for ln in block["body"]]
                out.append(Snippet(heading, block["line"], "\n".join(body) + "\n", NO_TEST not in block["flags"]))
            block = None
        else:
            block["body"].append(line)
    if block is not None:
        raise AssertionError(f"README line {block['line']}: a ``` block is never closed")
    return out


def sections(items: list[Snippet]) -> dict[str, list[Snippet]]:
    out: dict[str, list[Snippet]] = {}
    for s in items:
        out.setdefault(s.heading, []).append(s)
    return out


def run_section(heading: str, items: list[Snippet]) -> None:
    """Run a section's snippets in order in one fresh namespace; a snippet that raises fails with its heading,
    README line and the traceback."""
    ns: dict = {"__name__": f"readme_{re.sub(r'[^0-9a-zA-Z]+', '_', heading)}"}
    for s in items:
        if not s.run:
            continue
        error = None
        try:
            # padded with the lines above it, so a traceback's line numbers are README.md's own
            exec(compile("\n" * s.line + s.code, "README.md", "exec"), ns)  # noqa: S102 - the README's code
        except Exception as e:  # noqa: BLE001 - any failure of a snippet is a test failure naming it
            tb = "".join(traceback.format_exception(e)[-6:])
            error = (f"README snippet under '## {heading}' (README.md line {s.line}) raised "
                     f"{type(e).__name__}: {e}\n{tb}")
        if error:
            pytest.fail(error, pytrace=False)


ALL = snippets(README.read_text(encoding="utf-8"))
SECTIONS = sections(ALL)


@pytest.fixture(scope="module")
def default_classifier(tmp_path_factory):
    """A cache whose `default-classifier` is the embedded MiniLM with a seeded head (no demo run, no download)."""
    from jaxattr.models import load_minilm, save_checkpoint
    from jaxattr.models.loading import DEFAULT_CLASSIFIER

    cache = tmp_path_factory.mktemp("jaxattr-cache")
    m = load_minilm(num_labels=2, seed=0, label_names=("negative", "positive"))
    save_checkpoint(cache / DEFAULT_CLASSIFIER, m.cfg, m.params, m.tokenizer)
    return cache


def test_readme_has_the_snippets_it_should():
    assert len(ALL) >= 5 and {"Python", "IBA", "Attribution"} <= set(SECTIONS), [(s.heading, s.line) for s in ALL]


def test_only_the_listed_snippets_are_not_run():
    not_run = {(s.heading, s.first_line) for s in ALL if not s.run}
    assert not_run == NOT_RUN, f"```python {NO_TEST} blocks in README.md: {sorted(not_run)}; listed: {sorted(NOT_RUN)}"


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_readme_section_runs(heading, default_classifier, monkeypatch, capsys):
    monkeypatch.setenv("JAXATTR_CACHE_DIR", str(default_classifier))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # jaxattr reads it per Hub lookup: a Hub name would fail, not download
    run_section(heading, SECTIONS[heading])


def test_a_failing_snippet_fails_with_its_heading():
    text = ("# t\n\n## Good\n\n```python\nx = 1\n```\n\n```python\nassert x == 1\n```\n\n## Broken\n\n"
            "```python\ny = undefined_name + 1\n```\n\n   ```python no-test\n   raise SystemExit\n   ```\n")
    got = sections(snippets(text))
    assert list(got) == ["Good", "Broken"] and [s.run for s in got["Broken"]] == [True, False]
    assert got["Broken"][1].first_line == "raise SystemExit"
    run_section("Good", got["Good"])  # the second snippet sees the first one's x
    with pytest.raises(pytest.fail.Exception, match=r"under '## Broken' \(README.md line 15\) raised NameError"):
        run_section("Broken", got["Broken"])
    with pytest.raises(pytest.fail.Exception, match="NameError"):
        run_section("Good", got["Good"][1:])  # a fresh namespace per section: no x without the first snippet
