"""benchmarks/feature_probe.py: the linear probe learns what the features encode, and the script's table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yofo.data.records import Expression
from yofo.data.synthetic import synthesize
from yofo.engine.checkpoint import save_model


@pytest.fixture(scope="module")
def probe(benchmark_script):
    """The benchmark script as a module."""
    return benchmark_script("feature_probe")


def test_expression_groups_split_appearance_by_its_words(probe) -> None:
    def group(text: str, kind: str) -> str:
        return probe.expression_group(Expression(exp_id="0", text=text, obj_id=1, kind=kind))

    assert group("the big red thing", "appearance") == "appearance: color + size"
    assert group("the cross", "appearance") == "appearance: shape"
    assert group("the cross on the left", "appearance+position") == "appearance+position"


def test_sentence_attributes_are_the_words_it_names(probe) -> None:
    assert probe.sentence_attributes("the big red thing") == {"color": "red", "shape": None, "size": "large"}
    assert probe.sentence_attributes("The little cross on the left") == {"color": None, "shape": "cross",
                                                                         "size": "small"}


def test_probe_reads_a_planted_attribute_and_not_noise(probe) -> None:
    rng = np.random.default_rng(0)
    labels = [("red", "blue", "green")[i % 3] for i in range(300)]
    features = rng.normal(size=(300, 8))
    planted = features.copy()
    planted[:, 3] = [("red", "blue", "green").index(c) + rng.normal(0, 0.05) for c in labels]
    assert probe.probe_accuracy(planted[:200], labels[:200], planted[200:], labels[200:]) == 1.0
    assert probe.probe_accuracy(features[:200], labels[:200], features[200:], labels[200:]) < 0.6  # chance 1/3


def test_table_for_a_checkpoint_and_bad_meta(probe, random_model, tmp_path: Path, capsys) -> None:
    data = tmp_path / "synth"
    synthesize(data, train=2, valid=1, seed=0, size=(64, 96), frames=6)
    checkpoint = tmp_path / "model.safetensors"
    save_model(random_model("tiny", ["model.input_size=[64,96]"]), checkpoint)
    out = tmp_path / "probe.md"
    argv = ["--checkpoint", str(checkpoint), "--data", str(data), "--every", "3", "--out", str(out)]
    assert probe.main(argv) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    probes, grounded, sentences = ([line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")][1:]
                                   for table in text.split("\n\n") if table.startswith("| "))
    assert [row[0].strip() for row in probes] == [
        "chance (most frequent class)", "layer1", "layer2", "layer3", "layer4", "Φ (solver input)",
        "V1 (layer2)", "V2 (layer3)", "V3 (layer4)"]
    assert all(0.0 <= float(cell) <= 1.0 for row in probes for cell in row[1:])
    counts = {row[0].strip(): int(row[1]) for row in grounded}
    expressions = json.loads((data / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    assert counts.pop("all") == sum(len(v["expressions"]) for v in expressions.values()) == sum(counts.values())
    assert all(0.0 <= float(cell) <= 1.0 for row in grounded for cell in row[2:4])  # J, readout on the target
    assert [row[0].strip() for row in sentences] == [  # tiny: feature mining fuses at all three scales
        "valid sentences naming it", "chance (most frequent class)",
        *(name for i in (1, 2, 3) for name in (f"z{i}", f"W_z z{i} (into M{i})"))]
    assert all(cell.strip() == "n/a" or 0.0 <= float(cell) <= 1.0 for row in sentences[1:] for cell in row[1:])

    meta_path = data / "valid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    video = next(iter(meta["videos"].values()))
    del next(iter(video["objects"].values()))["color"]
    meta_path.write_text(json.dumps(meta))
    assert probe.main(argv) == 2
    error = capsys.readouterr().err
    assert "valid/meta.json" in error and "'color'" in error and "yofo synth" in error
