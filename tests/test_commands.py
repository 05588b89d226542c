"""Commands that work as written: every `vqa-cache ...` command a recipe's comment prints, the README's tour
and docs/recipes.md's "coming from notebook X" sections, run in order as printed, in a scratch directory
holding the recipes.

What differs from the printed command, and only that, to keep the suite affordable: model and data paths
(/data/vqa2 and /data/dacon are tiny fixtures of those layouts; the models are a random ResNet18 at 32 px and
a tiny BERT or GPT-2 built here, given by appending --image-encoder/--image-size/--weights/--text-encoder),
and a budget appended to each command that trains or encodes: --limit (easy-VQA), one epoch, two sweep
trials, no DataLoader worker processes. Each command must exit 0."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "extract").glob("*.toml")) + sorted((ROOT / "train").glob("*.toml"))
VERBS = r"(?:extract|train|finetune|sweep|predict|ask|eval|report|runs)\b"
# at the start of a comment line (after a label like "VQA v2:"), or as "(= vqa-cache ...)"
COMMAND = re.compile(rf"(?:^(?:[\w .]+:\s*)?|\(=\s*)vqa-cache\s+({VERBS}[^()`#]*)")


def recipe_commands(path: Path) -> list[str]:
    """The commands a recipe's comment prints, in order (a trailing backslash continues on the next line)."""
    lines, out = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")], []
    joined = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line
        else:
            joined.append(line)
    for line in joined:
        for m in COMMAND.finditer(line):
            out.append(m.group(1).strip().rstrip(".").strip())
    return out


def page_commands(text: str) -> list[str]:
    """`$ vqa-cache ...` lines of a page's code blocks (a backslash continues on the next line)."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("$ vqa-cache "):
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            out.append(line[len("$ vqa-cache ") :].split("  #")[0].strip())
        i += 1
    return out


def seed_sections() -> dict[str, list[str]]:
    """docs/recipes.md: each "Coming from ..." section's commands."""
    text = (ROOT / "docs" / "recipes.md").read_text()
    parts = re.split(r"^### (Coming from .*)$", text, flags=re.M)
    return {parts[i]: page_commands(parts[i + 1].split("\n## ")[0]) for i in range(1, len(parts), 2)}


def test_the_parsers_find_the_commands():
    found = {f"{p.parent.name}/{p.name}": recipe_commands(p) for p in RECIPES}
    assert found["extract/vit-bert-lora.toml"][:3] == [
        "extract extract/vit-bert-lora.toml",
        "train train/vit-bert-head.toml --out runs/vit-bert-head",
        "finetune train/vit-bert-lora.toml --init-head runs/vit-bert-head",
    ]
    assert sum(map(len, found.values())) >= 15
    assert len(page_commands((ROOT / "README.md").read_text())) >= 4
    sections = seed_sections()
    assert len(sections) == 5 and all(sections.values()), sections


def tiny_args(words: list[str], text: str | None) -> list[str]:
    """The affordable budget and tiny models appended to one command's words (see the module docstring)."""
    command = words[0]
    if command not in ("extract", "train", "finetune", "sweep"):
        return []
    extra = ["--image-encoder", "resnet18", "--image-size", "32", "--weights", "random"]
    extra += ["--text-encoder", text] if text else ["--text-encoder", "bow"]
    if not any(w.startswith(("vqa2:", "csv:")) for w in words):
        extra += ["--limit", "40"]
    if command == "extract":
        extra += ["--workers", "0"]
    if command in ("train", "finetune"):
        extra += ["--epochs", "1"]
    if command == "finetune":
        extra += ["--set", "finetune.workers=0"]
    if command == "sweep":
        extra += ["--trials", "2", "--set", "sweep.epochs=1", "--set", "sweep.startup_trials=2"]
    return extra


def run_commands(cli, commands: list[str], text: str | None, data: dict, where: Path, monkeypatch):
    monkeypatch.chdir(where)
    for command in commands:
        for printed, real in data.items():
            command = command.replace(printed, real)
        if "$(python -c" in command:  # the README's easy-VQA test image
            import easy_vqa

            command = re.sub(r'"\$\(python -c [^"]*\)"', shlex.quote(easy_vqa.get_test_image_paths()[3]), command)
        words = shlex.split(command)
        r = cli(*words, *tiny_args(words, text))
        assert r.code == 0, f"vqa-cache {command}\n{r!r}"


@pytest.fixture
def scratch(tmp_path, monkeypatch, tiny_bert_dir, tiny_gpt2_dir):
    """A directory with the recipes, its own cache, tiny VQA v2 and DACON datasets; and the text model per
    setup."""
    from fixtures_data import make_csv, make_vqa2

    for d in ("extract", "train"):
        shutil.copytree(ROOT / d, tmp_path / d)
    monkeypatch.setenv("VQA_CACHE_HOME", str(tmp_path / "cache"))
    make_vqa2(tmp_path / "vqa2", images=(("train2014", 40), ("val2014", 4), ("test2015", 2)))
    make_csv(tmp_path / "dacon", train_images=12, test_images=2)
    data = {"/data/vqa2": str(tmp_path / "vqa2"), "/data/dacon": str(tmp_path / "dacon")}
    texts = {
        "vit-bert-lora": str(tiny_bert_dir),
        "vit-bert-head": str(tiny_bert_dir),
        "resnet50-gpt2-yesno": str(tiny_gpt2_dir),
        "resnet50-bow-lstm": None,
        "easyvqa-finetune": None,
    }
    return tmp_path, data, lambda stem: texts.get(stem, str(tiny_bert_dir))


def setup_commands(stem: str) -> list[str]:
    """The commands of extract/STEM.toml's comment, then train/STEM.toml's; when the first of them trains, the
    extract of the cache it reads comes first (a prerequisite the comment assumes, as `make train` does)."""
    commands = [
        c
        for d in ("extract", "train")
        if (ROOT / d / f"{stem}.toml").is_file()
        for c in recipe_commands(ROOT / d / f"{stem}.toml")
    ]
    if commands and commands[0].split()[0] in ("train", "sweep"):
        import tomllib

        data = tomllib.loads((ROOT / "train" / f"{stem}.toml").read_text())
        if "base" in data:
            data = tomllib.loads((ROOT / "train" / Path(data["base"]).name).read_text())
        commands.insert(0, f"extract {data['features']}")
    return commands


def distinct_setups() -> list[str]:
    """The recipe stems with commands, less those whose commands another stem's run includes."""
    sets = {stem: set(setup_commands(stem)) for stem in sorted({p.stem for p in RECIPES if recipe_commands(p)})}
    return [s for s in sets if not any(o != s and (sets[s] < sets[o] or (sets[s] == sets[o] and o < s)) for o in sets)]


STEMS = distinct_setups()


@pytest.mark.slow  # trains for long: not in `make test-fast`
@pytest.mark.parametrize("stem", STEMS)
def test_recipe_comment_commands_run(cli, scratch, stem, monkeypatch):
    where, data, text = scratch
    run_commands(cli, setup_commands(stem), text(stem), data, where, monkeypatch)


def test_readme_tour_runs(cli, scratch, monkeypatch):
    where, data, text = scratch
    commands = [c for c in page_commands((ROOT / "README.md").read_text()) if not c.startswith("eval")]
    run_commands(cli, commands, text("resnet50-tinybert-concat"), data, where, monkeypatch)


def test_coming_from_a_notebook_shows_commands_that_run():
    """docs/recipes.md's seed sections show the recipes' own commands, which the tests above run."""
    ran = {" ".join(shlex.split(c)) for stem in STEMS for c in setup_commands(stem)}
    ran |= {" ".join(shlex.split(c)) for c in page_commands((ROOT / "README.md").read_text())}
    for section, commands in seed_sections().items():
        missing = [c for c in commands if " ".join(shlex.split(c)) not in ran]
        assert not missing, f"{section}: commands no test runs: {missing}"


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_extract_spelling_of_set_works_in_train(cli, tmp_path):
    """`--set text.ids=true` names the same feature in extract and train (train reads it as features.text.ids)."""
    tiny = ["--image-encoder", "resnet18", "--image-size", "32", "--weights", "random", "--limit", "60"]
    r = cli("--cache-dir", tmp_path, "extract", *tiny, "--set", "text.ids=true", "--workers", 0)
    assert r.code == 0, r
    r = cli(
        "--cache-dir",
        tmp_path,
        "train",
        *tiny,
        "--head",
        "lstm",
        "--set",
        "text.ids=true",
        "--epochs",
        1,
        "--out",
        tmp_path / "run",
    )
    assert r.code == 0, r
    r = cli(
        "--cache-dir",
        tmp_path,
        "train",
        *tiny,
        "--head",
        "lstm",
        "--set",
        "features.text.ids=true",
        "--epochs",
        1,
        "--out",
        tmp_path / "run2",
    )
    assert r.code == 0, r


if __name__ == "__main__":  # print what the tests would run
    for p in RECIPES:
        print(p.name, recipe_commands(p))
    print(page_commands((ROOT / "README.md").read_text()))
    sys.exit(0)
