"""benchmarks/ablations.py: the Table 3 ablation table on a micro setup, skipping finished runs, and workers
that end with the script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from yofo.data.synthetic import synthesize
from yofo.engine.train import environment

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ablations(benchmark_script):
    """The benchmark script as a module."""
    return benchmark_script("ablations")


def test_table_and_resume(
    ablations, micro: list[str], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(ablations.__file__).parent))  # --jobs workers import the script
    data = tmp_path / "data"
    synthesize(data, train=2, valid=2, seed=0, size=(64, 64), frames=6)
    out = tmp_path / "out"
    overrides = [o for o in micro if not o.startswith("data.root=")]  # the script sets data.root from --data
    argv = ["--data", str(data), "--out", str(out), "--config", "tiny", "--seeds", "0,1", "--steps", "2",
            "--variants", "yofo,no_memory", "--max-videos", "2", *overrides]

    assert ablations.main([*argv, "--jobs", "2"]) == 0  # two runs at a time, each in its own process
    first = capsys.readouterr().out
    assert "4 runs to train, 2 at a time" in first and first.count("): J&F ") == 4 and first.count("already done") == 0
    for variant in ("yofo", "no_memory"):
        for seed in (0, 1):
            assert (out / "runs" / variant / f"seed{seed}" / "eval" / "metrics.json").is_file()
    results = json.loads((out / "ablations.json").read_text())
    assert list(results["variants"]) == ["yofo", "no_memory"]
    row = results["variants"]["no_memory"]
    assert row["overrides"] == ["model.fm.motion.window=0", "model.memory.size=1"] and row["seeds"] == [0, 1]
    assert 0.0 <= row["J&F"]["mean"] <= 1.0 and row["J&F"]["std"] >= 0.0
    assert 0.0 <= row["control"]["mean"] <= 1.0 and 0.0 <= row["grounded"]["mean"] <= 1.0
    assert row["per_cue"]  # the synthetic benchmark has cues
    here = environment(torch.device("cpu"))
    machine = f"{here['cpu']}, {here['cpu_capability']}"  # from each run's environment.json
    assert row["machines"] == {machine: 2} and results["runs"]["yofo"]["0"]["machines"] == [machine]
    table = (out / "ablations.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| variant")]
    assert [line.split("|")[1].strip() for line in rows] == ["YOFO", "w/o memory"]
    assert "| control | grounded |" in next(line for line in table if line.startswith("| variant"))
    assert f"Trained on: {machine} (4 runs)." in table[-1]
    with Image.open(out / "ablations.png") as image:
        assert image.format == "PNG"

    # A second call, one run at a time, skips every finished run and gives the same table; seed by seed.
    assert ablations.main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("already done") == 4
    assert [line.split(" (")[0] for line in second.splitlines() if line.startswith("[")] == [
        "[1/4] yofo seed 0", "[2/4] no_memory seed 0", "[3/4] yofo seed 1", "[4/4] no_memory seed 1"]
    assert (out / "ablations.md").read_text().splitlines() == table
    assert ablations.main([*argv, "--jobs", "2"]) == 0 and "0 runs to train, 2 at a time" in capsys.readouterr().out

    # Another budget in the same folder would mix unequal runs: refused.
    assert ablations.main([*argv[:argv.index("--steps") + 1], "3", *argv[argv.index("--steps") + 2:]]) == 2
    assert "field 'steps'" in capsys.readouterr().err


def test_resume_from_an_earlier_table_and_outputs_after_every_run(
    ablations, micro: list[str], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    synthesize(data, train=2, valid=2, seed=0, size=(64, 64), frames=6)
    overrides = [o for o in micro if not o.startswith("data.root=")]
    argv = ["--data", str(data), "--config", "tiny", "--seeds", "0,1", "--steps", "2", "--variants", "yofo",
            "--max-videos", "2", *overrides]

    # Stopped during its second run: the outputs already hold the first.
    train, calls = ablations.train, []

    def train_then_stop(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(*a, **k)

    monkeypatch.setattr(ablations, "train", train_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ablations.main([*argv, "--out", str(tmp_path / "stopped")])
    partial = json.loads((tmp_path / "stopped" / "ablations.json").read_text())
    assert partial["runs"] == {"yofo": {"0": partial["runs"]["yofo"]["0"]}}
    assert partial["variants"]["yofo"]["seeds"] == [0]
    assert "| YOFO | `model.fm.motion.window=0` | 1 |" in (tmp_path / "stopped" / "ablations.md").read_text()
    monkeypatch.setattr(ablations, "train", train)

    # --status lists what is left and trains nothing, also where nothing is finished yet.
    capsys.readouterr()
    assert ablations.main([*argv, "--out", str(tmp_path / "stopped"), "--status"]) == 0
    assert "1 run left to train\n[2/2] yofo seed 1 (model.fm.motion.window=0)\n" in capsys.readouterr().out
    assert ablations.main([*argv, "--out", str(tmp_path / "empty"), "--status"]) == 0
    assert "2 runs left to train" in capsys.readouterr().out and len(calls) == 2
    assert json.loads((tmp_path / "empty" / "ablations.json").read_text())["runs"] == {}

    # Another machine: a copy of that JSON beside data synthesized elsewhere, no run folders; its run from before
    # runs recorded their CPU.
    del partial["runs"]["yofo"]["0"]["machines"]
    committed = tmp_path / "committed.json"
    committed.write_text(json.dumps(partial))
    elsewhere = tmp_path / "elsewhere"
    synthesize(elsewhere, train=2, valid=2, seed=0, size=(64, 64), frames=6)
    capsys.readouterr()
    argv_elsewhere = [*argv, "--data", str(elsewhere), "--out", str(tmp_path / "continued")]
    assert ablations.main([*argv_elsewhere, "--resume-from", str(committed)]) == 0
    out = capsys.readouterr().out
    assert out.count("already done") == 1 and out.count("): J&F ") == 2
    assert not (tmp_path / "continued" / "runs" / "yofo" / "seed0").exists()  # taken from the JSON, not retrained
    continued = json.loads((tmp_path / "continued" / "ablations.json").read_text())
    assert continued["runs"]["yofo"]["0"] == partial["runs"]["yofo"]["0"]
    assert continued["variants"]["yofo"]["seeds"] == [0, 1]
    assert continued["variants"]["yofo"]["machines"]["not recorded"] == 1
    assert "not recorded (1 run)" in (tmp_path / "continued" / "ablations.md").read_text()

    # A table of another budget, or of other data, is refused with the field named.
    synthesize(tmp_path / "other", train=2, valid=2, seed=1, size=(64, 64), frames=6)
    for change, field in ((["--steps", "3"], "settings.steps"), (["--data", str(tmp_path / "other")], "settings.data")):
        assert ablations.main([*argv_elsewhere, *change, "--resume-from", str(committed)]) == 2
        assert f"field '{field}'" in capsys.readouterr().err
    assert ablations.main([*argv_elsewhere, "--resume-from", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot read it" in capsys.readouterr().err


def _process_state(pid: int) -> str | None:
    """The state letter of ``/proc/<pid>/stat`` (``Z`` for a zombie), None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
def test_workers_end_with_a_killed_script(ablations, tmp_path: Path) -> None:
    """A ``--jobs`` worker busy with a run ends when the script is killed (even by SIGKILL, which the script
    cannot handle), so that a restarted script is the only process training its run folders."""
    with (tmp_path / "stderr").open("w") as stderr:  # the killed script's resource tracker warns there
        parent = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                import os, sys, time
                sys.path.insert(0, {str(Path(ablations.__file__).parent)!r})
                import ablations
                pool = ablations.worker_pool(1)
                print(pool.submit(os.getpid).result(), flush=True)
                pool.submit(time.sleep, 300)  # a long run, busy when the script is killed
                time.sleep(300)
            """)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=tmp_path,
        )
    worker = None
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), (tmp_path / "stderr").read_text()
        worker = int(line)
        assert _process_state(worker) not in (None, "Z")  # the worker runs its task
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _process_state(worker) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _process_state(worker) in (None, "Z"), "the worker outlived the killed script"
    finally:
        parent.kill()
        parent.stdout.close()
        if worker is not None and _process_state(worker) not in (None, "Z"):
            os.kill(worker, signal.SIGKILL)  # no orphan left behind by a failing test


def test_an_edited_config_file_is_another_budget(ablations, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The table records the config's content, not only its name: an edit that changes what the runs learn is
    refused; one of where and how fast they run is not, nor is any edit against a table that predates it."""
    data = tmp_path / "data"
    synthesize(data, train=2, valid=2, seed=0, size=(64, 64), frames=6)
    config = tmp_path / "mine.yaml"
    tiny = (Path(ablations.__file__).parents[1] / "configs" / "tiny.yaml").read_text()
    config.write_text(tiny)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--out", str(out), "--config", str(config), "--status"]
    assert ablations.main(argv) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["resolved"]["train.stage1.lr"] == pytest.approx(1e-3) and "train.seed" not in settings["resolved"]

    config.write_text(tiny.replace("checkpoint_every: 10", "checkpoint_every: 5\n  num_threads: 1"))
    assert ablations.main(argv) == 0
    config.write_text(tiny.replace("lr: 1.0e-3", "lr: 2.0e-3"))
    capsys.readouterr()
    assert ablations.main(argv) == 2
    assert "field 'resolved.train.stage1.lr' is 0.001 but this call asks for 0.002" in capsys.readouterr().err
    del settings["resolved"]  # a table begun before the content was recorded
    (out / "settings.json").write_text(json.dumps(settings))
    assert ablations.main(argv) == 0
