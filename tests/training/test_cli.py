"""The trainer's command line is built from the config dataclasses: every field is an option with its default,
flags parse both ways, and a bad setting is a one-line error (exit 2) left in OUT/error.json for the app."""

import dataclasses
import json

import pytest

from training import config as configs
from training.cli import build_parser, config_from, main

COMMANDS = {"reward": configs.RewardConfig, "sft": configs.SFTConfig, "dpo": configs.DPOConfig,
            "ppo": configs.PPOConfig, "generate": configs.GenerateConfig, "critique": configs.CritiqueConfig,
            "feedback": configs.FeedbackConfig}  # fmt: skip
GIVEN_OTHERWISE = {"source_weights"}  # --human-weight and --ai-weight


def subcommand(name: str):
    return next(action for action in build_parser()._actions if action.dest == "command").choices[name]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_config_field_is_an_option_with_the_config_default(command):
    config = COMMANDS[command]
    actions = {action.dest: action for action in subcommand(command)._actions}
    for field in dataclasses.fields(config):
        if field.name in GIVEN_OTHERWISE:
            continue
        action = actions[field.name]
        assert action.option_strings[0] == f"--{field.name.replace('_', '-')}"
        assert action.required or action.default == field.default, field.name


def test_flags_parse_both_ways_and_literals_become_choices():
    required = ["--data", "d.jsonl", "--out", "o"]
    args = build_parser().parse_args(["reward", *required, "--lora", "--no-normalize", "--no-use-margin"])
    built = config_from(configs.RewardConfig, args, source_weights={"human": 1.0, "ai": 1.0})
    assert (built.lora, built.normalize, built.use_margin) == (True, False, False)
    assert config_from(configs.RewardConfig, build_parser().parse_args(["reward", *required]),
                       source_weights={}).normalize  # fmt: skip

    with pytest.raises(SystemExit):
        build_parser().parse_args(["ppo", "--prompts", "p", "--out", "o", "--reward-model", "r", "--missing-eos", "x"])
    assert "{subtract,replace}" in subcommand("ppo").format_help()
    assert "Responses per prompt." in subcommand("generate").format_help()  # the field's own docstring


def test_a_reward_preset_sets_the_defaults_and_options_given_win_wherever_they_stand():
    from training.cli import _preset

    def parsed(*extra: str) -> configs.RewardConfig:
        argv = ["reward", *extra, "--data", "d.jsonl", "--out", "o"]
        return config_from(configs.RewardConfig, build_parser(_preset(argv)).parse_args(argv), source_weights={})

    assert parsed() == configs.RewardConfig(source_weights={})
    gpu = parsed("--preset", "gpu")
    assert gpu == configs.RewardConfig(source_weights={}, **configs.REWARD_PRESETS["gpu"])
    assert gpu.model == "smollm2-135m-instruct" and gpu.max_length == 1024
    assert parsed("--epochs", "3", "--preset", "gpu").epochs == 3.0
    assert parsed("--preset", "gpu", "--model", "minilm-l6").model == "minilm-l6"
    with pytest.raises(SystemExit):
        parsed("--preset", "tpu")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--prompts", "p.jsonl", "--model", "m", "--samples", "0"], "samples must be above 0, not 0."),
        (["critique", "--prompts", "p", "--principles", "q", "--model", "m", "--max-prompts", "-1"],
         "max_prompts must be 0 (all) or more, not -1."),
        (["reward", "--data", "d.jsonl", "--eval-fraction", "1.5"], "eval_fraction is a share of the prompts"),
        (["sft", "--data", "d.jsonl", "--learning-rate", "0"], "learning_rate must be above 0, not 0.0."),
        (["ppo", "--prompts", "p", "--reward-model", "r", "--batch-size", "6", "--mini-batch-size", "4"],
         "The batch size (6) must be a positive multiple of the minibatch size (4)."),
    ],
)  # fmt: skip
def test_a_bad_setting_is_a_one_line_error_left_for_the_app(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert json.loads((tmp_path / "error.json").read_text())["message"].startswith(message)
