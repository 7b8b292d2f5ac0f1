"""Table 3 of the paper on the synthetic benchmark: the six ablation variants, equal budgets, several seeds.

Usage: .venv/bin/python benchmarks/ablations.py --data DIR --out DIR [--config demo] [--seeds 0,1,2]
           [--steps 250] [--variants yofo,fm_ss,...] [--max-videos N] [key=value ...]

Each variant is the same config (``--config`` plus the ``key=value`` overrides) with one switch (README,
"Table 3 ablations are config switches"); every variant × seed (``train.seed``) is trained from scratch for
``--steps`` steps (:func:`yofo.engine.train.train`) and evaluated on the synthetic valid split
(:func:`yofo.engine.evaluate.evaluate`). ``--data`` gets the default benchmark (``yofo synth``'s settings:
400 train / 50 valid videos, 96×160, 16 frames, seed 0) when it does not exist yet.

Output folder::

    OUT/settings.json               config, overrides, steps, data, max videos: a later call must match them
    OUT/runs/<variant>/seed<k>/     the training run (model.safetensors, metrics.csv, checkpoints/)
    OUT/runs/<variant>/seed<k>/eval/    yofo eval's output (metrics.json, per_object.csv, predictions/)
    OUT/ablations.md                J, F, J&F (mean ± std over seeds) and J&F per cue, one row per variant
    OUT/ablations.json              the same numbers plus every run's J, F, J&F and per-cue J&F
    OUT/ablations.png               bar chart: J&F overall and per cue, error bars = std over seeds

Resumable: a run whose ``eval/metrics.json`` exists is skipped; an interrupted run resumes from its last
checkpoint (bit-exact on CPU). Seeds and variants can be added to an existing folder; other settings cannot
(``settings.json``), so that every row of the table has had the same budget.

Default budget: 250 steps per run. Measured at ``demo`` size (16 frames per step: batch 4 of 4-frame clips
then, batch 8 of 2-frame clips now; ``train.num_threads=1``) on the 2-core development machine while other
jobs shared it: 1.5 steps/s (2 steps/s with a free core) and about 1 s per
valid video to evaluate, i.e. ~3.7 min per run and ~70 min for the whole table of 6 variants × 3 seeds,
leaving margin for a busier machine within ~90 minutes. That is far shorter than the 6000 steps the demo
recipe plans: the table compares variants at an equal small budget on synthetic data. The order of the
variants it finds is a finding about this setting, not a target to reproduce the paper's Table 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from yofo.config import load_config
from yofo.data.synthetic import synthesize
from yofo.engine.evaluate import METRICS_FILE, evaluate
from yofo.engine.train import train
from yofo.errors import InputError, YofoError
from yofo.files import atomic_write

# Table 3's rows (README): name -> (paper label, config overrides).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "yofo": ("YOFO", []),
    "fm_baseline": ("w/ FM-baseline", ["model.fm.mode=baseline"]),
    "fm_ss": ("w/ FM-SS", ["model.fm.mode=single_scale"]),
    "fm_cat": ("w/ FM-Cat", ["model.fm.fusion=concat"]),
    "no_mt": ("w/o MT", ["model.meta_transfer.enabled=false"]),
    "no_memory": ("w/o memory", ["model.memory.size=1"]),
}
DEFAULT_STEPS = 250  # see the module docstring: ~90 min for the whole table on 2 cores
SETTINGS_FILE = "settings.json"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/ablations.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic benchmark (synthesized when absent)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (reused to continue a table)")
    parser.add_argument("--config", default="demo", help="config name or YAML path (default: demo)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values (default: 0,1,2)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps per run ({DEFAULT_STEPS})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N valid videos")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every variant")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got '{args.seeds}'")
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown variant '{unknown[0]}'; valid: {', '.join(VARIANTS)}")
    if args.steps < 1:
        parser.error(f"--steps: {args.steps} must be >= 1")
    return args


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write ``OUT/settings.json``, or check that an existing one matches: equal budgets for every row."""
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{path}: not valid JSON; remove it or use another --out") from None
        changed = [key for key in settings if saved.get(key) != settings[key]]
        if changed:
            raise InputError(f"{path}: field '{changed[0]}' is {saved.get(changed[0])!r} but this call asks for "
                             f"{settings[changed[0]]!r}; use another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2) + "\n"))


def run_one(args: argparse.Namespace, variant: str, seed: int) -> tuple[dict[str, Any], bool]:
    """Train and evaluate one variant × seed, or read its results when it has finished before.

    Returns:
        (the run's metrics.json content, whether it was skipped).
    """
    run = args.out / "runs" / variant / f"seed{seed}"
    metrics = run / "eval" / METRICS_FILE
    if metrics.is_file():
        return json.loads(metrics.read_text()), True
    overrides = [*args.overrides, *VARIANTS[variant][1], f"data.root={args.data}", f"train.seed={seed}"]
    cfg = load_config(args.config, overrides)
    train(cfg, run, resume=True, max_steps=args.steps)  # resume=True: an interrupted run continues
    result = evaluate(args.data, "synthetic", run / "eval", checkpoint=run / "model.safetensors", device=cfg.device,
                      max_videos=args.max_videos)
    return result, False


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def _run_row(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run that the table uses."""
    return {"J": result["J"]["mean"], "F": result["F"]["mean"], "J&F": result["J&F"],
            "per_cue": {cue: r["J&F"] for cue, r in result.get("per_cue", {}).items()}}


def summarize_runs(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Mean ± std over seeds of each variant's J, F, J&F and per-cue J&F.

    Args:
        runs: ``{variant: {seed: run row}}`` (rows as :func:`_run_row`).
    """
    summary = {}
    for variant, by_seed in runs.items():
        rows = list(by_seed.values())
        cues = sorted({cue for row in rows for cue in row["per_cue"]})
        summary[variant] = {
            "label": VARIANTS[variant][0],
            "overrides": VARIANTS[variant][1],
            "seeds": sorted(by_seed),
            **{key: _mean_std([row[key] for row in rows]) for key in ("J", "F", "J&F")},
            "per_cue": {cue: _mean_std([row["per_cue"][cue] for row in rows if cue in row["per_cue"]]) for cue in cues},
        }
    return summary


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def write_table(path: Path, summary: dict[str, Any], settings: dict[str, Any]) -> None:
    """Markdown table: one row per variant, J, F, J&F and J&F per cue as mean ± std over seeds."""
    cues = sorted({cue for row in summary.values() for cue in row["per_cue"]})
    lines = [
        f"# Table 3 ablations on the synthetic benchmark ({settings['config']}, {settings['steps']} steps per run)",
        "",
        "Mean ± std over seeds (train.seed) of J, F and J&F on the synthetic valid split. The order found is a "
        "finding about this short, equal budget, not a reproduction target.",
        "",
        "| variant | override | seeds | J | F | J&F | " + " | ".join(f"J&F {cue}" for cue in cues) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(cues),
    ]
    for row in summary.values():
        override = ", ".join(f"`{o}`" for o in row["overrides"]) or "(none)"
        cue_cells = [_cell(row["per_cue"][c]) if c in row["per_cue"] else "–" for c in cues]
        lines.append(f"| {row['label']} | {override} | {len(row['seeds'])} | {_cell(row['J'])} | {_cell(row['F'])} "
                     f"| **{_cell(row['J&F'])}** | " + " | ".join(cue_cells) + " |")
    extra = " ".join(settings["overrides"]) or "none"
    lines += ["", f"Config overrides for every variant: {extra}. Valid videos evaluated: "
              f"{settings['max_videos'] or 'all'}."]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


def plot(path: Path, summary: dict[str, Any]) -> None:
    """Grouped bar chart: per variant, J&F overall and per cue; error bars are the std over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    cues = sorted({cue for row in summary.values() for cue in row["per_cue"]})
    groups = [("overall", lambda row: row["J&F"])] + [
        (cue, lambda row, cue=cue: row["per_cue"].get(cue, {"mean": np.nan, "std": 0.0})) for cue in cues]
    x = np.arange(len(summary))
    width = 0.8 / len(groups)
    figure, axes = plt.subplots(figsize=(max(6.4, 1.3 * len(summary)), 3.8), dpi=120)
    for i, (name, get) in enumerate(groups):
        stats = [get(row) for row in summary.values()]
        axes.bar(x + (i - (len(groups) - 1) / 2) * width, [s["mean"] for s in stats], width,
                 yerr=[s["std"] for s in stats], capsize=2, label=name)
    axes.set_xticks(x, [row["label"] for row in summary.values()])
    axes.set_ylabel("J&F (synthetic valid)")
    axes.set_title("Table 3 ablations: mean ± std over seeds")
    axes.legend(fontsize="small", ncol=len(groups))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), suffix=".png")
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ablation table (see the module docstring); 0 on success, 2 on a yofo error."""
    args = _parse_args(argv)
    try:
        settings = {"config": args.config, "overrides": args.overrides, "steps": args.steps,
                    "data": str(args.data.resolve()), "max_videos": args.max_videos}
        _check_settings(args.out, settings)
        if not args.data.exists():
            print(f"synthesizing the default benchmark into {args.data}", flush=True)
            synthesize(args.data, progress=True)
        runs: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in args.variants}
        total = len(args.variants) * len(args.seeds)
        for n, (variant, seed) in enumerate(((v, s) for v in args.variants for s in args.seeds), 1):
            start = time.perf_counter()
            print(f"[{n}/{total}] {variant} seed {seed}: {' '.join(VARIANTS[variant][1]) or 'no override'}", flush=True)
            result, skipped = run_one(args, variant, seed)
            runs[variant][seed] = _run_row(result)
            how = "already done" if skipped else f"{(time.perf_counter() - start) / 60:.1f} min"
            print(f"[{n}/{total}] {variant} seed {seed}: J&F {result['J&F']:.3f} ({how})", flush=True)
        summary = summarize_runs(runs)
        results = {"settings": settings, "variants": summary, "runs": runs}
        atomic_write(args.out / "ablations.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2) + "\n"))
        write_table(args.out / "ablations.md", summary, settings)
        plot(args.out / "ablations.png", summary)
    except YofoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.out / "ablations.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
