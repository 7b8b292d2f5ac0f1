"""Table 3 of the paper on the synthetic benchmark: the six ablation variants and motion-aware feature mining
on, equal budgets, several seeds.

Usage: .venv/bin/python benchmarks/ablations.py --data DIR --out DIR [--config demo] [--seeds 0,1,2]
           [--steps N] [--jobs N] [--variants yofo,fm_ss,...] [--max-videos N] [--resume-from JSON] [--status]
           [key=value ...]

Each variant is the same config (``--config`` plus the ``key=value`` overrides) with one switch (README, "Table 3
ablations are config switches"). The six Table 3 variants turn motion-aware feature mining (ours,
``model.fm.motion``, on in ``demo``) off, so that they are the paper's model; ``motion`` is YOFO with it on over a
window of 2 frames, as in ``demo``, so that it differs from ``yofo`` by the switch alone; ``motion_clip_past`` is
``motion`` trained without ``data.motion_history`` (each frame's motion map compares it with the clip's frame
before it, drawn up to 8 frames back, rather than with the video's; the shipped recipe before ``demo`` turned the
switch on), so that it measures that switch. Every variant × seed (``train.seed``) is trained for ``--steps`` steps
(default: the config's whole schedule; :func:`yofo.engine.train.train`) and evaluated on the synthetic valid split
with the shuffled-sentence control and the grounding check (:func:`yofo.engine.evaluate.evaluate`). ``--data`` gets
the default benchmark (``yofo synth``'s settings: 400 train / 50 valid videos, 96×160, 16 frames, seed 0) when it
does not exist yet.

Output folder::

    OUT/settings.json               config, overrides, steps, data (the benchmark's synth.json), max videos,
                                    and the config's content (``resolved``): a later call must match them
    OUT/runs/<variant>/seed<k>/     the training run (model.safetensors, metrics.csv, checkpoints/)
    OUT/runs/<variant>/seed<k>/eval/    yofo eval's output (metrics.json, per_object.csv, predictions/)
    OUT/ablations.md                J, F, J&F, the control's J&F, the grounded share and J&F per cue
                                    (mean ± std over seeds), one row per variant
    OUT/ablations.json              the same numbers plus every run's own
    OUT/ablations.png               bar chart: J&F overall and per cue, error bars = std over seeds

Resumable: a run whose ``eval/metrics.json`` exists is skipped; an interrupted run resumes from its last checkpoint
(bit-exact on CPU). Seeds and variants can be added to an existing folder; other settings cannot
(``settings.json``), so that every row of the table has had the same budget. The table, JSON and chart are
rewritten after every finished run, so they always hold every run finished so far. ``--resume-from`` takes the runs
recorded in an earlier ``ablations.json`` (e.g. the committed ``benchmarks/results/ablations-demo.json``) as
finished, so a table can be continued on another machine without its run folders; its settings must match this
call's, the data being compared by its ``synth.json`` and the config by its content, key by key (where and how fast
a run goes aside).

``--status`` trains nothing: it lists the runs left to train and rewrites the outputs from the finished ones (e.g.
after a table was stopped). ``--jobs N`` trains N runs at once, each in its own process; with the demo config's
``train.num_threads: 1`` that is one run per core. Those processes end with the script (Ctrl-C or ``kill`` on it is
enough to stop every run; each resumes from its last checkpoint on the next call).

Default budget: the config's whole schedule (``demo``: 6800 steps of 8 two-frame clips), the budget at which the
shipped model follows the sentence (``checkpoints/README.md``); a shorter ``--steps``, as the committed 1000-step
table (made with the earlier from-scratch ``demo``), compares the variants before grounding has emerged. On a
2-core machine a run of the whole ``demo`` schedule took about 86 minutes with ``--jobs 2``, and three runs at once
took 71–75 minutes with ``--jobs 3`` on another, so the table of 8 variants × 3 seeds takes 10 to 17 hours: run it
across sessions, it resumes. The order it finds is a finding about this setting (synthetic data, a CPU budget), not
a target to reproduce the paper's Table 3.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from yofo.config import flatten_config, load_config
from yofo.data.synthetic import synthesize
from yofo.engine.evaluate import METRICS_FILE, evaluate
from yofo.engine.train import ENVIRONMENT_FILE, train
from yofo.errors import InputError, YofoError
from yofo.files import atomic_write

# Table 3's rows (README): name -> (paper label, config overrides).
# The six Table 3 rows are the paper's model (motion-aware FM off, whatever the config says); the last rows
# turn it on over 2 frames, so that ``motion`` differs from ``yofo`` by that switch alone, and
# ``motion_clip_past`` from ``motion`` by ``data.motion_history`` (which does nothing with motion-aware FM off).
_PAPER = "model.fm.motion.window=0"
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "yofo": ("YOFO", [_PAPER]),
    "fm_baseline": ("w/ FM-baseline", [_PAPER, "model.fm.mode=baseline"]),
    "fm_ss": ("w/ FM-SS", [_PAPER, "model.fm.mode=single_scale"]),
    "fm_cat": ("w/ FM-Cat", [_PAPER, "model.fm.fusion=concat"]),
    "no_mt": ("w/o MT", [_PAPER, "model.meta_transfer.enabled=false"]),
    "no_memory": ("w/o memory", [_PAPER, "model.memory.size=1"]),
    "motion": ("w/ motion FM (ours)", ["model.fm.motion.window=2"]),
    "motion_clip_past": ("w/ motion FM, clip past (ours)", ["model.fm.motion.window=2", "data.motion_history=false"]),
}
CONTROL_SEED = 0  # the shuffled-sentence control of every run, as in `yofo demo`
SETTINGS_FILE = "settings.json"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/ablations.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic benchmark (synthesized when absent)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (reused to continue a table)")
    parser.add_argument("--config", default="demo", help="config name or YAML path (default: demo)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values (default: 0,1,2)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: the config's whole schedule)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--max-videos", type=int, default=None, help="evaluate only the first N valid videos")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, each in its own process (default 1); with train.num_threads=1, "
                             "as in the demo config, one per core")
    parser.add_argument("--resume-from", type=Path, default=None, metavar="JSON",
                        help="an earlier ablations.json whose runs count as finished (its settings must match)")
    parser.add_argument("--status", action="store_true",
                        help="train nothing: list the runs left to train and rewrite the outputs from the finished ones")
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
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps: {args.steps} must be >= 1")
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} must be >= 1")
    return args


def _data_id(data: Path) -> Any:
    """What identifies a benchmark: its ``synth.json`` (``yofo synth`` is byte-identical for its settings and
    seed, wherever the folder lies), or its absolute path for other data."""
    spec = data / "synth.json"
    if spec.is_file():
        try:
            return json.loads(spec.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{spec}: not valid JSON; synthesize the benchmark again with yofo synth") from None
    return str(data.resolve())


# Where and how fast a run goes, and what each run sets itself: not part of a table's budget.
_NOT_BUDGET = ("device", "data.root", "data.num_workers", "data.cache_mb", "train.num_threads", "train.channels_last",
               "train.log_every", "train.checkpoint_every", "train.seed")


def _resolved(args: argparse.Namespace) -> dict[str, Any]:
    """The config every variant starts from (``--config`` with the overrides), by dotted key, without the keys
    of :data:`_NOT_BUDGET`: an edit of the config file changes it though its name stays."""
    flat = flatten_config(load_config(args.config, args.overrides))
    return {key: value for key, value in flat.items() if key not in _NOT_BUDGET}


def _changed_setting(saved: dict[str, Any], settings: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first setting that differs between ``saved`` and ``settings`` as (name, saved value, value), or None.
    ``resolved`` is compared key by key (name ``resolved.<key>``), and not at all when ``saved`` lacks it (a table
    begun before it was recorded)."""
    for key, value in settings.items():
        if key == "resolved" and key in saved:
            old = saved[key]
            changed = next((k for k in sorted(set(old) | set(value)) if old.get(k) != value.get(k)), None)
            if changed is not None:
                return f"resolved.{changed}", old.get(changed), value.get(changed)
        elif key != "resolved" and saved.get(key) != value:
            return key, saved.get(key), value
    return None


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write ``OUT/settings.json``, or check that an existing one matches: equal budgets for every row."""
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise InputError(f"{path}: not valid JSON; remove it or use another --out") from None
        changed = _changed_setting(saved, settings)
        if changed:
            raise InputError(f"{path}: field '{changed[0]}' is {changed[1]!r} but this call asks for "
                             f"{changed[2]!r}; use another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2) + "\n"))


def _run_folder(args: argparse.Namespace, variant: str, seed: int) -> Path:
    """``OUT/runs/<variant>/seed<k>/``; its ``eval/metrics.json`` marks a finished run."""
    return args.out / "runs" / variant / f"seed{seed}"


def run_one(args: argparse.Namespace, variant: str, seed: int, progress: bool = True) -> tuple[dict[str, Any], str]:
    """Train (resuming an interrupted run) and evaluate one variant × seed.

    Args:
        progress: progress bars (off when several runs share the terminal).

    Returns:
        (the run's metrics.json content, the minutes it took).
    """
    run = _run_folder(args, variant, seed)
    start = time.perf_counter()
    overrides = [*args.overrides, *VARIANTS[variant][1], f"data.root={args.data}", f"train.seed={seed}"]
    cfg = load_config(args.config, overrides)
    train(cfg, run, resume=True, max_steps=args.steps, progress=progress)  # resume=True: an interrupted run continues
    result = evaluate(args.data, "synthetic", run / "eval", checkpoint=run / "model.safetensors", device=cfg.device,
                      max_videos=args.max_videos, control_seed=CONTROL_SEED, progress=progress)
    return result, f"{(time.perf_counter() - start) / 60:.1f} min"


def _previous_runs(path: Path, settings: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """The run rows of an earlier ``ablations.json`` (``--resume-from``), after checking its settings."""
    try:
        previous = json.loads(path.read_text())
        saved, runs = previous["settings"], previous["runs"]
    except OSError as err:
        raise InputError(f"--resume-from {path}: cannot read it ({err.strerror})") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"--resume-from {path}: expected an ablations.json with 'settings' and 'runs'") from None
    changed = _changed_setting(saved, settings)
    if changed:
        raise InputError(f"--resume-from {path}: field 'settings.{changed[0]}' is {changed[1]!r} but this "
                         f"call asks for {changed[2]!r}; its runs had another budget")
    return {variant: {int(seed): row for seed, row in by_seed.items()} for variant, by_seed in runs.items()}


def _exit_with_parent() -> None:
    """Pool-worker initializer: end this worker as soon as the script that spawned it ends, however it ended
    (Ctrl-C, ``kill``, ``kill -9``), so that no orphan keeps training a run folder that a restarted script
    resumes. The run loses at most its steps since its last checkpoint, as a killed ``yofo train`` does."""
    parent = multiprocessing.parent_process()

    def watch() -> None:
        parent.join()  # returns when the parent process is gone
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes that end with this process (:func:`_exit_with_parent`)."""
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold OpenMP or CUDA state
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_exit_with_parent)


def run_all(args: argparse.Namespace, settings: dict[str, Any],
            previous: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Every variant × seed, seed by seed, ``args.jobs`` at a time: ``{variant: {seed: run row}}`` (rows as
    :func:`_run_row`).

    Runs in ``previous`` (``--resume-from``) are not run again. The outputs are rewritten after every finished
    run (:func:`write_outputs`). With several jobs each run goes to a spawned process. A run's result does not
    depend on the process that trains it or on what runs beside it: training is deterministic for a given
    thread count.
    """
    pairs = [(v, s) for s in args.seeds for v in args.variants]  # one seed of every variant first
    runs: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in args.variants}

    def started(n: int, variant: str, seed: int) -> str:
        return f"[{n}/{len(pairs)}] {variant} seed {seed} ({' '.join(VARIANTS[variant][1])})"

    def finished(name: str, variant: str, seed: int, result: dict[str, Any], how: str) -> None:
        runs[variant][seed] = _run_row(result, _run_folder(args, variant, seed))
        print(f"{name}: J&F {result['J&F']:.3f} ({how})", flush=True)
        write_outputs(args.out, settings, _sorted_runs(runs))

    todo = []  # the runs to train: neither evaluated in OUT nor recorded in ``previous``
    for n, (variant, seed) in enumerate(pairs, 1):
        run = _run_folder(args, variant, seed)
        if (run / "eval" / METRICS_FILE).is_file():
            row, how = _run_row(json.loads((run / "eval" / METRICS_FILE).read_text()), run), "already done"
        elif seed in previous.get(variant, {}):
            row, how = previous[variant][seed], f"already done, {args.resume_from}"
        else:
            todo.append((n, variant, seed))
            continue
        runs[variant][seed] = row
        print(f"{started(n, variant, seed)}: J&F {row['J&F']:.3f} ({how})", flush=True)
    if args.status:
        print(f"{len(todo)} run{'s' * (len(todo) != 1)} left to train" + "".join(f"\n{started(*run)}" for run in todo), flush=True)
    elif args.jobs == 1:
        for n, variant, seed in todo:
            print(f"{started(n, variant, seed)}: training", flush=True)
            finished(started(n, variant, seed), variant, seed, *run_one(args, variant, seed))
    else:
        print(f"{len(todo)} runs to train, {args.jobs} at a time", flush=True)
        with worker_pool(args.jobs) as pool:
            futures = {pool.submit(run_one, args, variant, seed, False): (started(n, variant, seed), variant, seed)
                       for n, variant, seed in todo}
            for future in as_completed(futures):
                finished(*futures[future], *future.result())
    return _sorted_runs(runs)


def _sorted_runs(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[int, dict[str, Any]]]:
    """``runs`` with each variant's seeds in order and the variants that have no finished run left out."""
    return {variant: dict(sorted(by_seed.items())) for variant, by_seed in runs.items() if by_seed}


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def _run_row(result: dict[str, Any], run: Path) -> dict[str, Any]:
    """The numbers of one run that the table uses, and the CPUs that trained it.

    Args:
        result: the run's ``eval/metrics.json``.
        run: the run folder; its ``environment.json`` (one entry per start of ``yofo train``) names the CPUs,
            which decide the last bits of the weights and so, through training, a few hundredths of J&F.
    """
    starts = json.loads((run / ENVIRONMENT_FILE).read_text()) if (run / ENVIRONMENT_FILE).is_file() else []
    return {"machines": sorted({f"{start['cpu']}, {start['cpu_capability']}" for start in starts}),
            "J": result["J"]["mean"], "F": result["F"]["mean"], "J&F": result["J&F"],
            "control": result["control"]["J&F"],
            # no grounding check when no valid video has two objects (SynthOptions.min_objects = 1)
            "grounded": result["grounding"]["share"] if result.get("grounding") else float("nan"),
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
            **{key: _mean_std([row[key] for row in rows]) for key in ("J", "F", "J&F", "control", "grounded")},
            "per_cue": {cue: _mean_std([row["per_cue"][cue] for row in rows if cue in row["per_cue"]]) for cue in cues},
            "machines": _machine_counts(rows),
        }
    return summary


def _machine_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many of ``rows`` (run rows) each CPU trained; rows recorded before the CPU was count as "not recorded"."""
    counts: dict[str, int] = {}
    for row in rows:
        machine = " + ".join(row.get("machines") or ["not recorded"])  # several: the run was resumed elsewhere
        counts[machine] = counts.get(machine, 0) + 1
    return dict(sorted(counts.items()))


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def write_table(path: Path, summary: dict[str, Any], settings: dict[str, Any]) -> None:
    """Markdown table: one row per variant, J, F, J&F, control J&F, grounded share and J&F per cue as mean ± std."""
    cues = sorted({cue for row in summary.values() for cue in row["per_cue"]})
    budget = "the whole schedule" if settings["steps"] is None else f"{settings['steps']} steps"
    lines = [
        f"# Table 3 ablations on the synthetic benchmark ({settings['config']}, {budget} per run)",
        "",
        "Mean ± std over seeds (train.seed) of J, F and J&F on the synthetic valid split; *control*: J&F of the "
        "shuffled-sentence (language-blind) control; *grounded*: share of sentences on videos with two or more "
        "objects whose mask lands on their own object and on no other. The order found is a finding about this "
        "equal budget on synthetic data, not a reproduction target.",
        "",
        "| variant | override | seeds | J | F | J&F | control | grounded | "
        + " | ".join(f"J&F {cue}" for cue in cues) + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(cues),
    ]
    for row in summary.values():
        override = ", ".join(f"`{o}`" for o in row["overrides"])
        cue_cells = [_cell(row["per_cue"][c]) if c in row["per_cue"] else "–" for c in cues]
        lines.append(f"| {row['label']} | {override} | {len(row['seeds'])} | {_cell(row['J'])} | {_cell(row['F'])} "
                     f"| **{_cell(row['J&F'])}** | {_cell(row['control'])} | {_cell(row['grounded'])} | "
                     + " | ".join(cue_cells) + " |")
    extra = " ".join(settings["overrides"]) or "none"
    machines: dict[str, int] = {}
    for row in summary.values():
        for machine, n in row["machines"].items():
            machines[machine] = machines.get(machine, 0) + n
    trained_on = "; ".join(f"{machine} ({n} run{'s' * (n > 1)})" for machine, n in sorted(machines.items()))
    lines += ["", f"Config overrides for every variant: {extra}. Valid videos evaluated: "
              f"{settings['max_videos'] or 'all'}."]
    if machines:
        lines += ["", f"Trained on: {trained_on}. A run's last bits depend on the CPU, and the same run trained on "
                  "another CPU can land a few hundredths of J&F away (checkpoints/README.md, \"Reproducibility, "
                  "measured\")."]
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
    axes.set_xticks(x, ["\n".join(textwrap.wrap(row["label"], 16)) for row in summary.values()])
    axes.set_ylim(0.0, 1.0)  # J&F's whole range: room for the legend above the bars
    axes.set_ylabel("J&F (synthetic valid)")
    axes.set_title("Table 3 ablations: mean ± std over seeds")
    axes.legend(fontsize="small", ncol=len(groups))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), suffix=".png")
    plt.close(figure)


def write_outputs(out: Path, settings: dict[str, Any], runs: dict[str, dict[int, dict[str, Any]]]) -> None:
    """``OUT/ablations.json``, ``ablations.md`` and ``ablations.png`` of the runs finished so far."""
    summary = summarize_runs(runs)
    results = {"settings": settings, "variants": summary, "runs": runs}
    atomic_write(out / "ablations.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2) + "\n"))
    write_table(out / "ablations.md", summary, settings)
    plot(out / "ablations.png", summary)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ablation table (see the module docstring); 0 on success, 2 on a yofo error."""
    args = _parse_args(argv)
    try:
        if not args.data.exists():
            print(f"synthesizing the default benchmark into {args.data}", flush=True)
            synthesize(args.data, progress=True)
        settings = {"config": args.config, "overrides": args.overrides, "steps": args.steps,
                    "data": _data_id(args.data), "max_videos": args.max_videos, "resolved": _resolved(args)}
        previous = {} if args.resume_from is None else _previous_runs(args.resume_from, settings)
        _check_settings(args.out, settings)
        write_outputs(args.out, settings, run_all(args, settings, previous))
    except YofoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.out / "ablations.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
