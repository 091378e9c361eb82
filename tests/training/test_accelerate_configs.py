"""The accelerate configs we ship for several GPUs and several machines load as accelerate reads them."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

FOLDER = Path(__file__).resolve().parents[2] / "training" / "accelerate"


@pytest.mark.parametrize(
    ("name", "distributed", "machines"),
    [("ddp.yaml", "MULTI_GPU", 1), ("deepspeed_zero2.yaml", "DEEPSPEED", 1), ("multi_node.yaml", "MULTI_GPU", 2)],
)
def test_each_shipped_config_loads_with_what_it_promises(name, distributed, machines):
    config = load_config_from_file(str(FOLDER / name))
    assert (config.distributed_type, config.num_machines, config.mixed_precision) == (
        distributed, machines, "bf16",
    )  # fmt: skip
    if distributed == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
