"""The options of ``minires train``, built from the fields of ``TrainConfig``.

Each option's name, type, choices, range, default and help come from the field and its
metadata (see ``minires.run_config.setting``), so the command line cannot disagree with the
library: a setting added to ``TrainConfig`` is an option at once.
"""
from __future__ import annotations

import dataclasses

import click

from minires.cli.errors import option_name
from minires.run_config import TrainConfig, setting_type


class IntList(click.ParamType):
    """Comma-separated integers such as ``82,123``."""

    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        try:
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        except ValueError:
            self.fail(f"expected comma-separated integers such as 82,123, got {value!r}",
                      param, ctx)


def option_fields() -> list:
    """The fields of ``TrainConfig`` that ``minires train`` has an option for, in order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["option"]]


def _click_type(f):
    rules, kind = f.metadata, setting_type(f.name)
    if "choices" in rules:
        return click.Choice(rules["choices"])
    if rules["path"]:
        return click.Path(file_okay=False)
    if kind is list:
        return IntList()
    if kind is int:
        return click.IntRange(min=rules.get("minimum"))
    if kind is float:
        low = rules.get("minimum", rules.get("above"))
        return click.FloatRange(min=low, min_open="above" in rules, max=rules.get("below"),
                                max_open="below" in rules)
    return click.STRING


def _option(f):
    rules = f.metadata
    names = [rules["short"]] if "short" in rules else []
    kwargs = dict(default=f.default, help=rules["help"],
                  show_default=rules.get("shown_default", f.default is not None))
    if setting_type(f.name) is bool:
        flag = option_name(f.name)
        names.append(f"{flag}/{rules['off_flag']}" if "off_flag" in rules else flag)
        kwargs["is_flag"] = True
    else:
        names.append(option_name(f.name))
        kwargs["type"] = _click_type(f)
    return click.option(*names, f.name, **kwargs)


def config_options(command):
    """Decorate ``command`` with one option per ``TrainConfig`` setting (keyword = field)."""
    for f in reversed(option_fields()):
        command = _option(f)(command)
    return command
