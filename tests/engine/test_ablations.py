"""benchmarks/ablations.py: the Table 3 ablation table on a micro setup, and skipping finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from yofo.data.synthetic import synthesize

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
    assert "4 runs, 2 at a time" in first and first.count("): J&F ") == 4 and first.count("already done") == 0
    for variant in ("yofo", "no_memory"):
        for seed in (0, 1):
            assert (out / "runs" / variant / f"seed{seed}" / "eval" / "metrics.json").is_file()
    results = json.loads((out / "ablations.json").read_text())
    assert list(results["variants"]) == ["yofo", "no_memory"]
    row = results["variants"]["no_memory"]
    assert row["overrides"] == ["model.memory.size=1"] and row["seeds"] == [0, 1]
    assert 0.0 <= row["J&F"]["mean"] <= 1.0 and row["J&F"]["std"] >= 0.0
    assert 0.0 <= row["control"]["mean"] <= 1.0 and 0.0 <= row["grounded"]["mean"] <= 1.0
    assert row["per_cue"]  # the synthetic benchmark has cues
    table = (out / "ablations.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| variant")]
    assert [line.split("|")[1].strip() for line in rows] == ["YOFO", "w/o memory"]
    assert "| control | grounded |" in next(line for line in table if line.startswith("| variant"))
    with Image.open(out / "ablations.png") as image:
        assert image.format == "PNG"

    # A second call, one run at a time, skips every finished run and gives the same table.
    assert ablations.main(argv) == 0
    assert capsys.readouterr().out.count("already done") == 4
    assert (out / "ablations.md").read_text().splitlines() == table

    # Another budget in the same folder would mix unequal runs: refused.
    assert ablations.main([*argv[:argv.index("--steps") + 1], "3", *argv[argv.index("--steps") + 2:]]) == 2
    assert "field 'steps'" in capsys.readouterr().err
