"""The CLI's choices for --method, --gate and --granularity are written out (so that `--help`
answers without importing torch); these tests hold them to the registries the code dispatches
on. --format comes from the torch-free format table itself, and the table's promises are
checked here."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from slt_deploy.bench.artifacts import inspect as inspect_artifact
from slt_deploy.bench.runners import RUNNERS
from slt_deploy.cli import cli
from slt_deploy.errors import SltError
from slt_deploy.export import FORMATS
from slt_deploy.export.formats import BACKEND_NAMES
from slt_deploy.init import SCHEMES
from slt_deploy.masking.gates import GATES
from slt_deploy.search.config import (
    GATE_NAMES,
    GRANULARITIES,
    INIT_SCHEMES,
    METHOD_NAMES,
    SearchConfig,
)
from slt_deploy.search.methods import METHODS


def _choices(command: str, param: str) -> list[str]:
    (option,) = [p for p in cli.commands[command].params if p.name == param]
    assert isinstance(option.type, click.Choice), (command, param)
    return sorted(option.type.choices)


def test_every_format_entry_has_a_writer_and_its_suffix_names_its_kind(tmp_path):
    """The --format choices are the table itself; what the table promises must hold: a module
    with `write(net, request, inputs)`, a back-end for its kind, and bench's `inspect`
    recognising its files by the suffix."""
    assert _choices("export", "fmt") == FORMATS.names()
    for name in FORMATS.names():
        fmt = FORMATS.get(name)
        params = list(inspect.signature(fmt.writer().write).parameters)
        assert params == ["net", "request", "inputs"], name
        assert fmt.default_backend in RUNNERS, name
        for suffix in fmt.suffixes:
            path = tmp_path / f"artifact{suffix}"
            path.write_bytes(b"")
            assert inspect_artifact(path).kind == fmt.kind, (name, suffix)
    assert inspect_artifact(tmp_path).kind == "ticket"


def test_search_methods_gates_and_granularities_are_their_registries():
    assert _choices("search", "method") == METHODS.names() == sorted(METHOD_NAMES)
    assert _choices("search", "gate") == GATES.names() == sorted(GATE_NAMES)
    assert _choices("search", "init") == SCHEMES.names() == sorted(INIT_SCHEMES)
    assert _choices("search", "granularity") == sorted(GRANULARITIES)


def test_eval_backends_are_the_bench_runners():
    assert _choices("eval", "backend") == sorted(BACKEND_NAMES) == RUNNERS.names()


def test_search_options_are_the_config_fields_with_their_defaults():
    """The options are generated from SearchConfig: no option given means the config's own
    defaults, and every field a user may set has its option."""
    command = cli.commands["search"]
    params = {p.name: p for p in command.params}
    for f in dataclasses.fields(SearchConfig):
        if not f.metadata["cli"]:
            assert f.name not in params
            continue
        assert params[f.name].default == getattr(SearchConfig(), f.name), f.name
        assert params[f.name].opts[0] == "--" + f.name.replace("_", "-")
    ctx = command.make_context("search", ["--out", "x"])
    fields_given = {k: v for k, v in ctx.params.items() if k in SearchConfig.__dataclass_fields__}
    assert SearchConfig.from_dict(fields_given) == SearchConfig()


def test_a_recipe_with_an_unknown_choice_is_one_clear_error():
    with pytest.raises(SltError, match="--optimizer must be one of adam, sgd, got 'adagrad'"):
        SearchConfig(optimizer="adagrad").validate()
    with pytest.raises(SltError, match="--gate must be one of stg, hard-concrete"):
        SearchConfig(gate="concrete").validate()


def test_a_validation_seed_without_a_validation_split_is_one_clear_error():
    with pytest.raises(SltError, match="--val-seed picks the images --val-split holds out"):
        SearchConfig(val_seed=2).validate()
    SearchConfig(val_seed=2, val_split=100).validate()
