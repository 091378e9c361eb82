"""Every run kind is declared whole in its spec, and what the spec says matches the trainer and the services."""

import dataclasses
import inspect

import pytest

from labeling import runs
from labeling.models import TrainingRun
from labeling.runs.execution import rollout_options
from training.cli import RUNNERS, build_parser, config_from
from training.config import RolloutConfig


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
        assert set(spec.options) - {"human_weight", "ai_weight", "preset"} <= fields  # the command's own

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


def _another(value, choices=None):
    """A value of the same type that is not ``value`` (a different choice, when the option has choices)."""
    if choices:
        return next(choice for choice in choices if choice != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value * 0.5 + 0.25
    return f"{value}-other"


@pytest.mark.parametrize("kind", TrainingRun.Kind.values)
def test_the_options_a_run_passes_reach_the_trainer_with_their_values(kind):
    spec = runs.spec_for(kind)
    subcommand = next(action for action in build_parser()._actions if action.dest == "command").choices[spec.command]
    actions = {action.dest: action for action in subcommand._actions}
    config = {}
    for name in spec.options:
        default = actions[name].default
        config[name] = _another(default if default is not None else False, actions[name].choices)
    if "mini_batch_size" in config:  # PPO's check: the batch a multiple of the minibatch (the app sets them equal)
        config["mini_batch_size"] = config["batch_size"]
    required = [part for action in subcommand._actions if action.required for part in (action.option_strings[0], "x")]

    args = build_parser().parse_args([spec.command, *required, *runs.config_options(config, spec.options)])
    assert {name: getattr(args, name) for name in spec.options} == config
    if spec.config is not None:  # and the trainer's config takes them (its checks pass)
        built = config_from(spec.config, args, **({"source_weights": {}} if spec.command == "reward" else {}))
        assert {name: getattr(built, name) for name in spec.options if hasattr(built, name)} == {
            name: value for name, value in config.items() if hasattr(spec.config, name)
        }


GENERATING = [
    kind for kind in TrainingRun.Kind.values if issubclass(runs.spec_for(kind).config or object, RolloutConfig)
]


def test_the_kinds_that_generate_are_those_that_take_rollout_settings():
    assert set(GENERATING) == {"ppo", "generate", "evaluate", "critique"}


@pytest.mark.parametrize("kind", GENERATING)
def test_the_workers_rollout_engine_settings_reach_the_trainer_unless_the_run_sets_its_own(kind, settings):
    spec = runs.spec_for(kind)
    subcommand = next(action for action in build_parser()._actions if action.dest == "command").choices[spec.command]
    required = [part for action in subcommand._actions if action.required for part in (action.option_strings[0], "x")]
    assert rollout_options({}) == []  # the defaults: nothing added to the command
    settings.ROLLOUT_ENGINE, settings.ROLLOUT_STATIC_CACHE, settings.ROLLOUT_CUDA_GRAPH = "vllm", True, True
    settings.ROLLOUT_VLLM_GPU_MEMORY = 0.5
    built = config_from(spec.config, build_parser().parse_args([spec.command, *required, *rollout_options({})]))
    assert (built.rollout_engine, built.static_cache, built.cuda_graph, built.vllm_gpu_memory) == (
        "vllm",
        True,
        True,
        0.5,
    )
    own = rollout_options({"rollout_engine": "loop"})  # a run that asked for the loop keeps it
    assert own[own.index("--rollout-engine") + 1] == "loop" and "--static-cache" in own
