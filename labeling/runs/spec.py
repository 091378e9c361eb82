"""What a run kind is, declared in one place: ``RunSpec``. Each module of ``labeling/runs/kinds/`` declares one
``SPEC`` (with its start service and admin form beside it); ``SPECS`` finds them all."""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

from labeling.models import TrainingRun
from labeling.models.runs import RunKind
from labeling.runs.forms import RunForm


def _no_arguments(run: TrainingRun, out_dir: Path) -> list[str]:
    return []


def _no_inputs(run: TrainingRun, out_dir: Path) -> None:
    return None


@dataclass(frozen=True)
class RunPage:
    """The admin page that starts a run of the kind: ``/admin/labeling/project/<id>/<slug>/``."""

    slug: str
    title: str
    button: str
    action: str  # the name of the project list's action that leads there
    description: str  # and its label in the actions menu


@dataclass(frozen=True)
class RunSpec:
    kind: RunKind
    command: str  # python -m training <command>
    # The training.config dataclass the trainer builds from the run's options, or None (its options are its own).
    config: type | None
    start: Callable[..., TrainingRun]  # the service that queues a run; the admin form's fields are its arguments
    form: type[RunForm]
    page: RunPage
    register: Callable[[TrainingRun, Path, datetime], object]  # stores the outputs once the trainer succeeds
    data_flag: str = ""  # how the run's snapshot reaches the trainer ("--data", "--prompts"), if it reads one
    model_flag: str = "--model"  # how the model to start from does ("": the kind names its models otherwise)
    options: tuple[str, ...] = ()  # keys of the run's config passed on as --key value when set
    # More arguments (files of the run's folder, other models) and the inputs written before the trainer starts.
    arguments: Callable[[TrainingRun, Path], list[str]] = _no_arguments
    prepare: Callable[[TrainingRun, Path], None] = _no_inputs
    curves: tuple[str, ...] = field(default=())  # metrics drawn on the run page, over the steps


@cache
def _specs() -> dict[str, RunSpec]:
    from labeling.runs import kinds

    specs = {}
    for module in pkgutil.iter_modules(kinds.__path__):
        spec = importlib.import_module(f"{kinds.__name__}.{module.name}").SPEC
        specs[str(spec.kind)] = spec
    return specs


def spec_for(kind: str) -> RunSpec:
    """The spec of a run kind (a ``TrainingRun.Kind`` or its value)."""
    return _specs()[str(kind)]


def all_specs() -> list[RunSpec]:
    """Every kind's spec, in the order of ``TrainingRun.Kind``."""
    specs = _specs()
    return [specs[kind] for kind in TrainingRun.Kind.values if kind in specs]
