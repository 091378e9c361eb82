"""Every run kind is declared whole in its spec, and what the spec says matches the trainer and the services."""

import dataclasses
import inspect

import pytest

from labeling import runs
from labeling.models import TrainingRun
from training.cli import RUNNERS, build_parser


def subcommand_options(command: str) -> set[str]:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    return {option for action in subparsers.choices[command]._actions for option in action.option_strings}


@pytest.mark.parametrize("kind", TrainingRun.Kind.values)
def test_every_kind_has_a_complete_spec(kind):
    spec = runs.spec_for(kind)
    assert spec.kind == kind
    assert spec.command in RUNNERS
    assert spec.register is not None and callable(spec.prepare) and callable(spec.arguments)

    # The trainer accepts every option the spec passes on, and the flags for its data and model.
    accepted = subcommand_options(spec.command)
    passed = {f"--{name.replace('_', '-')}" for name in spec.options}
    assert passed <= accepted, passed - accepted
    assert {flag for flag in (spec.data_flag, spec.model_flag) if flag} <= accepted
    if spec.config is not None:
        fields = {field.name for field in dataclasses.fields(spec.config)}
        assert set(spec.options) - {"human_weight", "ai_weight"} <= fields

    # The admin form asks for the start service's own arguments, and the service's defaults are the config's.
    parameters = inspect.signature(spec.start).parameters
    assert set(spec.form.base_fields) <= set(parameters) - {"project", "created_by"}
    for name, field in spec.form.base_fields.items():
        default = parameters[name].default
        if default in (None, inspect.Parameter.empty):  # a model version or snapshot picked, or a required value
            continue
        if field.initial is not None:
            assert field.initial == default, name
        if spec.config is not None and hasattr(spec.config, name):
            assert default == getattr(spec.config, name), name


def test_each_kind_has_its_own_page_and_action():
    specs = runs.all_specs()
    assert [spec.kind for spec in specs] == list(TrainingRun.Kind)
    assert len({spec.page.slug for spec in specs}) == len({spec.page.action for spec in specs}) == len(specs)
