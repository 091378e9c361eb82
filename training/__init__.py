"""RLHF Studio's trainer: a plain library (no Django) that reads exported datasets from files and writes
checkpoints and metrics to an output directory. The labelling app runs it in a subprocess, as
``accelerate launch -m training <algorithm> ...``."""
