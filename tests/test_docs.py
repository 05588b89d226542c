"""The README and docs/ stay true, cheaply: their relative links lead somewhere, and every
`vqa-cache COMMAND --option` they show is an option that command has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MAKE_TARGETS = {"features": "extract", "train": "train", "finetune": "finetune", "sweep": "sweep"}


def prose_and_code(text: str) -> tuple[list[str], list[list[str]]]:
    """(lines outside fenced code blocks, the fenced blocks as lists of lines)."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    return prose, blocks


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-', repeats get -1, -2 ..."""
    seen, out = {}, set()
    for line in prose_and_code(page.read_text(encoding="utf-8"))[0]:
        m = HEADING.match(line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    prose = "\n".join(prose_and_code(page.read_text(encoding="utf-8"))[0])
    prose = re.sub(r"`[^`\n]*`", "", prose)  # code spans are not links
    return LINK.findall(prose)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_somewhere(page):
    """Every relative link (and its #anchor) names a file, folder or heading that exists."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: broken links: {broken}"


def test_every_page_in_docs_is_reached_from_the_readme():
    """A page nobody can reach is lost: following links from README.md leads to every docs/*.md."""
    reached, todo = set(), [PAGES[0].resolve()]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.is_file():
            continue
        reached.add(page)
        todo += [
            (page.parent / t.partition("#")[0]).resolve()
            for t in links(page)
            if t.partition("#")[0] and not re.match(r"^[a-z][a-z0-9+.-]*:", t)
        ]
    missing = [p.name for p in PAGES[1:] if p.resolve() not in reached]
    assert not missing, f"docs pages that README.md does not lead to: {missing}"


def commands(page: Path) -> list[list[str]]:
    """The `vqa-cache ...` command lines a page shows, as words: in code blocks (a line ending in a
    backslash, or an indented line under a command, continues it) and in `code spans`. `python -m vqa_cache`
    and `make TARGET ... ARGS="..."` count too. Usage lines (`[--x N]`, `a|b`) are split into words."""
    prose, blocks = prose_and_code(page.read_text(encoding="utf-8"))
    lines = []
    for block in blocks:
        for line in block:
            line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            if lines and line[:1].isspace() and line.strip() and lines[-1] is not None:
                lines[-1] += " " + line.strip()
            elif lines and lines[-1] is not None and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line.strip() or None)
    lines = [ln for ln in lines if ln]
    lines += re.findall(r"`([^`\n]+)`", "\n".join(prose))
    out = []
    for line in lines:
        line = line.replace("\\", " ")
        m = re.search(r"(?:^|[\s$(])(?:vqa-cache|-m vqa_cache)\s+(.*)", line)
        if m:
            out.append(words(m.group(1)))
            continue
        m = re.match(r"(?:.*\s)?make\s+(features|train|finetune|sweep)\b(.*)", line)
        if m:
            extra = re.search(r"ARGS=(\"[^\"]*\"|'[^']*'|\S+)", m.group(2))
            out.append([MAKE_TARGETS[m.group(1)], *(words(extra.group(1).strip("\"'")) if extra else [])])
    return out


def words(text: str) -> list[str]:
    """Shell words, with usage notation taken apart: `[--x N]...` -> `--x N`, `a|b` -> `a | b`."""
    text = re.sub(r"[\[\]]|\.\.\.|…", " ", text)
    try:
        return shlex.split(text.replace("|", " | "))
    except ValueError:  # an unbalanced quote in a usage line
        return text.replace("|", " | ").split()


def options_of(cli, *command) -> tuple[set[str], set[str]]:
    """(options, subcommands) that `vqa-cache COMMAND --help` lists."""
    r = cli(*command, "--help")
    assert r.code == 0, f"vqa-cache {' '.join(command)} --help: {r!r}"
    section, options, subcommands = None, set(), set()
    for line in r.out.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1].strip()
        elif section == "Options" and line.lstrip().startswith("-"):
            options.update(OPTION.findall(line.strip().split("  ")[0]))
        elif section == "Commands" and line.strip():
            subcommands.add(line.split()[0])
    return options, subcommands


def wrong_options(argv: list[str], lookup) -> tuple[int, list[str]]:
    """(options checked, what is wrong) in one command's words after `vqa-cache`; lookup(*command) gives
    (options, subcommands) of `vqa-cache COMMAND`."""
    options, subcommands = lookup()
    wrong = []
    while argv and argv[0].startswith("-"):  # global options: --cache-dir DIR, --debug
        flag = argv.pop(0).split("=")[0]
        if flag not in options:
            wrong.append(f"vqa-cache {flag} (not a global option)")
        elif flag == "--cache-dir" and argv:
            argv.pop(0)
    if not argv or not re.fullmatch(r"[a-z]+", argv[0]):
        return 0, wrong  # `vqa-cache` alone, `vqa-cache COMMAND`, ...
    if argv[0] not in subcommands:
        return 0, wrong + [f"vqa-cache {argv[0]} (no such command)"]
    calls = [((argv[0],), argv[1:])]
    if lookup(argv[0])[1]:  # a group: `cache ls [--json] | info KEY | ...`
        calls = []
        for part in " ".join(argv[1:]).split(" | "):
            sub, *rest = part.split() or [""]
            if sub not in lookup(argv[0])[1]:
                wrong.append(f"vqa-cache {argv[0]} {sub} (no such command)")
            else:
                calls.append(((argv[0], sub), rest))
    checked = 0
    for command, rest in calls:
        for flag in OPTION.findall(" ".join(w.split("=")[0] for w in rest if w.startswith("--"))):
            checked += 1
            if flag not in lookup(*command)[0]:
                wrong.append(f"vqa-cache {' '.join(command)} {flag}")
    return checked, wrong


def test_commands_in_readme_and_docs_name_real_options(cli):
    """`vqa-cache SUBCOMMAND --option` as shown in README.md and docs/*.md: the subcommand exists and has
    that option (per its --help); global options stand before the subcommand."""
    helps: dict[tuple, tuple] = {}

    def lookup(*command):
        if command not in helps:
            helps[command] = options_of(cli, *command)
        return helps[command]

    checked, wrong = 0, []
    for page in PAGES:
        for argv in commands(page):
            n, problems = wrong_options(argv, lookup)
            checked += n
            wrong += [f"{page.name}: {p}" for p in problems]
    assert checked > 50, f"only {checked} options found: is the command parser still reading the pages?"
    assert not wrong, f"options or commands the CLI does not have: {wrong}"
