"""The CLI's choices are written out (so that `--help` answers without importing torch); these
tests hold them to the registries the code dispatches on, so an entry added to one is not
missing from the other."""

from __future__ import annotations

import click

from slt_deploy.cli import cli
from slt_deploy.export import FORMATS
from slt_deploy.masking.gates import GATES
from slt_deploy.search.config import GRANULARITIES, METHOD_NAMES
from slt_deploy.search.methods import METHODS


def _choices(command: str, param: str) -> list[str]:
    (option,) = [p for p in cli.commands[command].params if p.name == param]
    assert isinstance(option.type, click.Choice), (command, param)
    return sorted(option.type.choices)


def test_export_formats_are_the_format_registry():
    assert _choices("export", "fmt") == FORMATS.names()


def test_search_methods_gates_and_granularities_are_their_registries():
    assert _choices("search", "method") == METHODS.names() == sorted(METHOD_NAMES)
    assert _choices("search", "gate_family") == GATES.names()
    assert _choices("search", "granularity") == sorted(GRANULARITIES)
