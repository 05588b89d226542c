"""Every option of every command has help text (walking the click commands), and `--head` names every head."""

from __future__ import annotations

import click
import pytest

from vqa_cache.cli import cli as app


def commands(group=app, path=("vqa-cache",)):
    for name, command in sorted(group.commands.items()):
        yield " ".join(path + (name,)), command
        if isinstance(command, click.Group):
            yield from commands(command, path + (name,))


def test_every_option_of_every_command_has_help():
    missing = [
        f"{path} {'/'.join(p.opts)}"
        for path, command in [("vqa-cache", app), *commands()]
        for p in command.params
        if isinstance(p, click.Option) and not (p.help or "").strip()
    ]
    assert missing == []
    assert len(list(commands())) >= 10


@pytest.mark.parametrize("name", ["train", "finetune"])
def test_head_help_names_every_head(name):
    from vqa_cache import heads

    [head] = [p for p in app.commands[name].params if p.name == "head"]
    assert heads.HEADS and all(h in head.help for h in heads.HEADS), head.help


@pytest.mark.parametrize("name", ["train", "finetune"])
def test_the_training_numbers_say_what_they_set(cli, name):
    r = cli(name, "--help")
    assert r.code == 0
    text = " ".join(r.out.split())
    for flag, key in (
        ("--epochs", "optim.epochs"),
        ("--lr", "optim.lr"),
        ("--batch-size", "optim.batch_size"),
        ("--seed", "seed"),
    ):
        assert flag in text and key in text.split(flag, 1)[1].split(" --", 1)[0], flag
