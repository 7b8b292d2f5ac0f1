"""``yofo synth`` and ``yofo data stats`` from the command line: output, exit codes, problems found, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yofo.cli import main
from yofo.video_io import write_palette_png


def _stats(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict]:
    code = main(["data", "stats", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_synth_writes_a_benchmark_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    argv = ["synth", str(out), "--train", "2", "--valid", "1", "--size", "32x64", "--frames", "6", "--seed", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 train + 1 valid videos" in printed and "videos/s" in printed
    assert json.loads((out / "synth.json").read_text())["seed"] == 4
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert main(["synth", str(tmp_path / "x"), "--size", "96by160"]) == 2
    assert capsys.readouterr().err.strip() == "error: --size: '96by160' is not of the form HxW, e.g. 96x160"


def test_stats_counts_and_strict_mode(tmp_path: Path, capsys: pytest.CaptureFixture, synth_root: Path) -> None:
    code, stats = _stats(capsys, str(synth_root), "--split", "valid", "--strict")
    assert code == 0 and stats["problems"] == []
    assert stats["videos"] == 6 and stats["frames"] == stats["masks"] == 60
    assert stats["expressions"] == sum(stats["kinds"].values()) and stats["objects"] >= 12
    assert main(["data", "stats", str(synth_root), "--split", "valid"]) == 0
    text = capsys.readouterr().out
    assert "expressions" in text and "problems" in text and "kind appearance" in text


def test_stats_reports_every_problem(ytvos_root: Path, capsys: pytest.CaptureFixture) -> None:
    frame = ytvos_root / "train" / "JPEGImages" / "a1" / "00005.jpg"
    frame.unlink()
    corrupt = ytvos_root / "train" / "JPEGImages" / "b2" / "00000.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    write_palette_png(ytvos_root / "train" / "Annotations" / "a1" / "00005.png", np.zeros((32, 32), np.uint8))
    write_palette_png(ytvos_root / "train" / "Annotations" / "a1" / "00010.png", np.zeros((32, 32), np.uint8))
    code, stats = _stats(capsys, str(ytvos_root), "--strict")
    assert code == 1
    problems = "\n".join(stats["problems"])
    assert f"{frame}: file not found" in problems
    assert f"{corrupt}: cannot read image" in problems
    assert "video 'a1' expression '1': obj_id 2 has no mask" in problems
    assert len(stats["problems"]) == 3
    assert main(["data", "stats", str(ytvos_root)]) == 0  # without --strict problems are only reported


def test_stats_of_davis_and_refcoco(davis_root: Path, refcoco_root: Path, capsys: pytest.CaptureFixture) -> None:
    code, stats = _stats(capsys, str(davis_root), "--format", "davis", "--strict")
    assert code == 0 and stats["split"] == "val"
    assert (stats["videos"], stats["frames"], stats["masks"], stats["objects"], stats["expressions"]) == (2, 6, 6, 4, 12)
    code, stats = _stats(capsys, str(refcoco_root), "--format", "refcoco", "--strict")
    assert code == 0
    assert (stats["videos"], stats["objects"], stats["expressions"], stats["masks"]) == (2, 2, 3, 2)


def test_bad_dataset_is_a_one_line_error(ytvos_root: Path, capsys: pytest.CaptureFixture) -> None:
    (ytvos_root / "meta_expressions" / "train" / "meta_expressions.json").write_text('{"videos": {"a1": {}}}')
    assert main(["data", "stats", str(ytvos_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "meta_expressions.json: video 'a1': missing field 'expressions'" in err
    assert "\n" not in err
