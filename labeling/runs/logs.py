"""A trainer's log as people read it, and why a run failed, in a sentence."""

import re
import signal
from pathlib import Path

from training.runtime import read_error

LOG_TAIL_CHARS = 4000


ANSI_ESCAPE = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # operating-system commands (terminal titles, links)
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # colours, cursor moves, erasing
    r"|\x1b[()][0-9A-B]"  # character sets
    r"|\x1b[@-Z\\-_]"  # the rest of the two-character escapes
)


def clean_log(text: str) -> str:
    """A log as a person should read it: no terminal colour codes, and each progress bar (a line redrawn with
    carriage returns) only in its last state."""
    text = ANSI_ESCAPE.sub("", text)
    lines = []
    for line in text.split("\n"):
        redraws = [part for part in line.split("\r") if part.strip()]
        lines.append(redraws[-1] if redraws else line.replace("\r", ""))
    return "\n".join(lines)


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a log, cleaned (``clean_log``), at most ``chars`` characters from a line start."""
    if not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(max(0, path.stat().st_size - 8 * chars))  # progress bars shrink a lot when cleaned
        text = clean_log(log.read().decode("utf-8", errors="replace"))
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    return tail[tail.find("\n") + 1 :] if "\n" in tail else tail


LAUNCHER_EXIT = re.compile(
    r"returned non-zero exit status (?P<code>-?\d+)"  # accelerate's launcher, one process
    r"|died with <Signals\.(?P<signal>\w+): \d+>"  # the same, killed by a signal
    r"|exitcode\s*:\s*(?P<rank>-?\d+)"  # torchrun, several processes
)
EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?(?P<type>[A-Z]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(?P<message>.*))?$"
)


def _exit(returncode: int, log_text: str) -> str:
    """How the trainer ended, in words. ``accelerate launch`` exits with 1 whatever the trainer's exit was and
    names the real one in its own error: read it from there."""
    signal_name, code = None, returncode
    for match in LAUNCHER_EXIT.finditer(log_text):
        if match["signal"]:
            signal_name = match["signal"]
        else:
            code = int(match["code"] or match["rank"])
            signal_name = signal.Signals(-code).name if code < 0 else None
    if signal_name is None and returncode < 0:
        signal_name = signal.Signals(-returncode).name
    if signal_name:
        hint = " (the kernel kills a process that runs out of memory this way)" if signal_name == "SIGKILL" else ""
        return f"the trainer was killed by {signal_name}{hint}"
    return f"the trainer exited with code {code}"


LAUNCHER_ERRORS = ("CalledProcessError", "ChildFailedError")  # accelerate's and torchrun's, about the trainer


def _last_exception(log_text: str) -> str:
    """The last ``SomeError: message`` line of a traceback in the log that is not a launcher's own; else the last
    line the trainer wrote (an argument error, "Killed")."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        match = EXCEPTION_LINE.match(line)
        if match and match["type"] not in LAUNCHER_ERRORS:
            return line
    launcher = next((i for i, line in enumerate(lines) if line.startswith("Traceback")), len(lines))
    return lines[launcher - 1] if launcher else ""


def failure_message(out_dir: Path, returncode: int) -> str:
    """Why a run failed: the trainer's own last exception (its type, message and the phase it was in, from
    ``error.json``, else from the log), then how the process ended."""
    log_text = log_tail(out_dir / "log.txt", chars=16 * LOG_TAIL_CHARS)
    error = read_error(out_dir)
    ending = _exit(returncode, log_text)
    if error:
        where = f" while {error['phase']}" if error.get("phase") else ""
        cause = f"{error['type']}: {error['message']}" if error.get("message") else error["type"]
        return f"Failed{where}: {cause} ({ending})."
    cause = _last_exception(log_text)
    return f"Failed: {cause} ({ending})." if cause else f"Failed: {ending[0].upper()}{ending[1:]}."
