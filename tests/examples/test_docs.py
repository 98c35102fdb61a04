"""The documentation holds together: README.md, docs/ and the READMEs of the
examples and benchmarks link only to files and headings that exist, the
README's configuration table and docs/configuration.md name exactly the keys
the filter accepts, and the README's envoy.yaml is one Envoy accepts.

Documentation that moves between files breaks links silently; these checks
are fast (the Envoy check is one `--mode validate`) and need no network."""
from __future__ import annotations

import re
from pathlib import Path

from harness.envoy import validate
from harness.filter_config import REPO

#: Every Markdown file whose relative links are checked.
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "examples").glob("*/README.md")), REPO / "bench" / "README.md"]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks, where `[a](b)` and `# x` are code."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, code marks and
    punctuation dropped, lower case, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of `path` whose file or heading does not exist."""
    problems = []
    for target in LINK.findall(CODE_SPAN.sub("", prose(path.read_text()))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}: {target}"
        if not linked.exists():
            problems.append(f"{where}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where}: no heading #{anchor} in {linked.relative_to(REPO)}")
        elif anchor and linked.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
    return problems


def test_every_relative_link_resolves():
    assert (REPO / "docs").is_dir() and len(DOCS) > 10
    problems = [p for doc in DOCS for p in broken_links(doc)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## The `x` key, in full\n\nText.\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#the-x-key-in-full) [ok](#here) [`code`](a.md)\n"
                    "```\n[in code](nowhere.md)\n```\n## Here\n"
                    "[gone](missing.md) [bad](a.md#nothing) [web](https://example.com/x.md)\n")
    assert broken_links(page) == ["b.md: missing.md: no such file",
                                  "b.md: a.md#nothing: no heading #nothing in a.md"]


def accepted_keys() -> list[str]:
    """The keys the filter accepts: its `KEYS` list, wherever in core/src it lives."""
    for source in sorted((REPO / "core" / "src").rglob("*.rs")):
        found = re.search(r"pub const KEYS: \[&str; \d+\] = \[(.*?)\];", source.read_text(), re.S)
        if found:
            return re.findall(r'"([^"]+)"', found.group(1))
    raise AssertionError("no `pub const KEYS` in core/src")


def section(text: str, heading: str) -> str:
    """From `heading` (a level-2 heading) to the next level-2 heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def test_readme_configuration_table_has_one_line_per_accepted_key():
    keys = accepted_keys()
    assert "seeds" in keys and "hosts" in keys
    table = section((REPO / "README.md").read_text(), "Configuration")
    rows = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
    assert rows == keys


def test_configuration_reference_has_a_section_per_accepted_key_in_the_same_order():
    text = prose((REPO / "docs" / "configuration.md").read_text())
    assert re.findall(r"^### `([a-z_]+)`$", text, re.M) == accepted_keys()


def test_readme_envoy_configuration_validates(module, tmp_path):
    block = re.search(r"```yaml\n(.*?)```", section((REPO / "README.md").read_text(), "Envoy configuration"),
                      re.S)
    assert block, "README.md's 'Envoy configuration' has no yaml block"
    yaml_text = block.group(1)
    # As written, the module path is relative to the repository root, where
    # scripts/build writes it; here it is the module the suite built.
    assert "filename: target/alternator_lb.wasm" in yaml_text
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml_text.replace("target/alternator_lb.wasm", str(module)))
    ok, out = validate(config)
    assert ok and out.strip().endswith("OK"), out[-3000:]
    # The filter's own check ran: a value it refuses makes validation fail.
    config.write_text(config.read_text().replace('"port": 8000', '"port": 0'))
    ok, out = validate(config)
    assert not ok and 'invalid configuration: key "port"' in out, out[-3000:]
