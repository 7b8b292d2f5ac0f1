"""The README's commands run as written, so the docs cannot drift from the code.

Every command of every ```bash block runs, in order, in one scratch folder (so ``yofo synth data/synth``
comes before the commands that read ``data/synth``; ``yofo`` through :func:`yofo.cli.main`,
``.venv/bin/python`` as this interpreter), except those in :data:`SKIP`, each with its reason. A command
followed by a ``# error: ...`` line must fail with exit 2 and that one-line message (it always runs: it
fails before reading any data). Then every
```python block runs in that folder.

Only two kinds of change make the commands fit a test run, both listed here:

* :data:`SMALLER`: sizes that would take minutes are replaced by small ones (``--train 400`` -> ``--train 4``);
  every ``yofo train`` runs 1 step (``--max-steps``).
* ``video.mp4``, which the README uses as "your own video", is written first (a 6-frame clip).

Each README section says how to make the ``data/synth`` it uses; a ``yofo synth`` into a folder already
made is not repeated.

A command added to the README runs here too: if it needs external data, a GPU or a long time, add it to
:data:`SKIP` with the reason (and, where possible, the test that covers it another way).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yofo.cli import build_parser, main
from yofo.config import load_config
from yofo.video_io import Mp4Writer

from readme import readme_blocks, readme_commands

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds per command: a command that serves or trains for long belongs in SKIP

# Command prefix -> why it does not run here.
SKIP: dict[str, str] = {
    "make ": "sets up the environment and runs the demo or the test suite itself (minutes)",
    ".venv/bin/python -m pytest": "the test suite itself",
    ".venv/bin/python benchmarks/ablations.py": "trains 21 runs of the demo schedule (tests/engine/test_ablations.py runs it small)",
    "yofo train paper": "external datasets and a BERT-base folder (tests/test_real_format_e2e.py runs this command on "
                        "real-format data)",
    ".venv/bin/torchrun": "several processes for minutes (tests/engine/test_ddp.py trains and evaluates under torchrun)",
    "yofo data stats /data/": "external datasets (tests/data/test_data_cli.py reads every format)",
    "yofo eval --checkpoint CKPT": "external Ref-DAVIS17 / Ref-YouTube-VOS (tests/test_real_format_e2e.py)",
    "yofo demo --train": "trains for 20 minutes (tests/engine/test_demo.py trains the demo briefly)",
    "yofo bench --config": "full-size models at 384x640 on 32- and 256-frame videos (minutes; tests/test_bench.py "
                           "runs yofo bench small)",
    ".venv/bin/python benchmarks/loader_speed.py": "synthesizes 40 videos at 480x864 and times the loader (minutes; "
                                                   "tests/test_loader_speed.py runs it small)",
    "yofo serve": "serves until stopped (tests/test_serve.py starts it and drives the page in Chromium)",
    ".venv/bin/python benchmarks/threads.py": "times 12 thread settings for 20 s each (minutes; "
                                              "tests/test_segment_cli.py checks that --threads is honoured)",
    ".venv/bin/python benchmarks/feature_probe.py": "probes 400 training videos (tests/test_feature_probe.py runs it "
                                                    "small)",
}
# Replacements applied to every command that runs (README size -> test size).
SMALLER = {"--train 400": "--train 4", "--valid 50": "--valid 2", "--max-steps 100": "--max-steps 1"}


def _skip_reason(command: str, error: str | None = None) -> str | None:
    if error is not None:
        return None
    command = re.sub(r"^(\w+=\S*\s+)+", "", command)  # leading environment assignments
    return next((reason for prefix, reason in SKIP.items() if command.startswith(prefix)), None)


def _argv(command: str) -> list[str]:
    for big, small in SMALLER.items():
        command = command.replace(big, small)
    argv = shlex.split(command)
    if argv[:2] == ["yofo", "train"] and "--max-steps" not in argv:
        argv += ["--max-steps", "1"]
    return argv


def test_every_readme_command_is_run_or_skipped_with_a_reason(tmp_path: Path, monkeypatch, capsys) -> None:
    """``yofo`` commands run in this process (:func:`yofo.cli.main`, saving the start-up of a new one), others
    as subprocesses."""
    commands = readme_commands()
    assert any(c.startswith("yofo train paper") for c, _ in commands)  # the parser sees continuations
    for prefix in SKIP:  # a stale entry would hide nothing and should go
        assert any(c.startswith(prefix) for c, _ in commands), f"SKIP entry '{prefix}' matches no README command"
    for name in ("checkpoints", "configs", "benchmarks"):
        (tmp_path / name).symlink_to(REPO / name)
    with Mp4Writer(tmp_path / "video.mp4", fps=10) as writer:
        for t in range(6):
            frame = np.full((96, 160, 3), 90, dtype=np.uint8)
            frame[30:60, 10 + 10 * t : 40 + 10 * t] = (220, 30, 30)
            writer.write(frame)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    ran = []
    for command, error in commands:
        if _skip_reason(command, error):
            continue
        argv = _argv(command)
        if argv[:2] == ["yofo", "synth"] and Path(argv[2]).exists():
            continue  # each README section says how to make data/synth; once made, it is there
        if argv[0] == "yofo":
            try:
                code = main(argv[1:])
            finally:
                torch.set_num_threads(threads)  # a config's train.num_threads stays set in this process
            stderr = capsys.readouterr().err
        else:
            argv[0] = sys.executable if argv[0] == ".venv/bin/python" else argv[0]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": "1"})
            code, stderr = result.returncode, result.stderr
        if error is None:
            assert code == 0, (f"README command failed: {command}\n{stderr[-2000:]}\n(if it needs external data, "
                               "a GPU or a long time, add it to SKIP with the reason)")
        else:
            assert code == 2 and stderr.startswith(error) and stderr.count("\n") == 1, (command, stderr)
        ran.append(command)
    assert len(ran) >= 8, ran

    # what the commands promise to write
    assert (tmp_path / "runs" / "demo" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "short" / "metrics.csv").is_file()
    assert (tmp_path / "eval" / "synth" / "metrics.json").is_file()
    assert (tmp_path / "eval" / "rescored" / "metrics.json").is_file()
    assert (tmp_path / "out" / "overlay.mp4").is_file() and (tmp_path / "out" / "sentences.json").is_file()


def test_readme_python_snippets_run(tmp_path: Path) -> None:
    blocks = readme_blocks("python")
    assert len(blocks) >= 4
    (tmp_path / "checkpoints").symlink_to(REPO / "checkpoints")
    with Mp4Writer(tmp_path / "video.mp4", fps=10) as writer:
        for t in range(4):
            writer.write(np.full((96, 160, 3), 40 * t, dtype=np.uint8))
    program = "\n".join(f"exec(compile({block!r}, 'README block {i}', 'exec'), {{}})" for i, block in enumerate(blocks))
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("command", [c for c, e in readme_commands() if _skip_reason(c, e) and c.startswith("yofo ")])
def test_skipped_readme_commands_parse(command: str) -> None:
    """Even a command that does not run here names a real sub-command with options it accepts, and a training
    command's config and overrides load (the README's paper command once failed right there)."""
    argv = shlex.split(command)
    args, rest = build_parser().parse_known_args(argv[1:])
    assert args.command == argv[1] and all("=" in item and not item.startswith("-") for item in rest), rest
    if args.command == "train":
        load_config(args.config, [*args.overrides, *rest])
