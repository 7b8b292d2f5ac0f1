"""Streaming speed per torch thread count, on an idle machine and beside competing CPU-bound processes.

Usage: .venv/bin/python benchmarks/threads.py [--workloads demo,demo480,paper] [--threads 1,2,0]
                                              [--competing 0,1] [--seconds 20] [--json OUT.json]

The measurement behind the default thread policy of ``yofo segment``, ``eval``, ``demo`` and ``bench``
(:data:`yofo.threads.DEFAULT_THREADS`). Each measurement runs in a fresh process: ``VideoSegmenter.step_logits``
with one sentence on synthetic frames (:func:`yofo.commands.bench.synthetic_frames`), two untimed warm-up
frames, then as many frames as fit in ``--seconds`` (at least 3). Workloads:

  demo     the shipped checkpoint (configs/demo.yaml) on 96×160 frames: the synthetic benchmark's size
  demo480  the shipped checkpoint run at a 480×854 input (DAVIS size; a heavier frame than yofo segment,
           which fits every frame into the checkpoint's 96×160)
  paper    configs/paper.yaml, random weights, 384×640 frames (as `yofo bench`)

Threads: N >= 1 or 0 for torch's default (one per physical core, or ``OMP_NUM_THREADS``). ``--competing K``
starts K busy-looping Python processes before the measurement (another user's job on a shared machine) and
stops them after it. Prints frames/s, one run per cell (run it twice to see the spread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "yofo-synthetic.safetensors"
WORKLOADS = {  # name: (config or checkpoint, frame size)
    "demo": (str(CHECKPOINT), (96, 160)),
    "demo480": (str(CHECKPOINT), (480, 854)),
    "paper": ("paper", (384, 640)),
}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def measure(workload: str, threads: int, seconds: float) -> dict:
    """In this process: frames/s of one sentence on ``workload`` with ``threads`` torch threads (0: torch's default)."""
    import torch

    from yofo.commands.bench import BenchSpec, bench_segmenter, build_bench_model, synthetic_frames
    from yofo.threads import set_threads

    threads = set_threads(threads)
    source, size = WORKLOADS[workload]
    checkpoint = source if source.endswith(".safetensors") else None
    spec = BenchSpec(config=source if checkpoint is None else "demo", overrides=(), checkpoint=checkpoint,
                     size=size, device="cpu", threads=threads)
    segmenter = bench_segmenter(spec, build_bench_model(spec)[0])
    segmenter.start(["the red circle on the left"])
    frames = synthetic_frames(size, 10**6)
    with torch.inference_mode():
        for _ in range(2):
            segmenter.step_logits(next(frames))
        count, start = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - start < seconds:
            segmenter.step_logits(next(frames))
            count += 1
        elapsed = time.perf_counter() - start
    return {"workload": workload, "threads": threads, "frames": count,
            "seconds": round(elapsed, 2), "frames_per_s": round(count / elapsed, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="demo,demo480,paper")
    parser.add_argument("--threads", type=_ints, default=[1, 2, 0], help="thread counts (0: torch's default)")
    parser.add_argument("--competing", type=_ints, default=[0, 1], help="numbers of competing busy processes")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.seconds)))
        return 0

    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    results = []
    print(f"{os.cpu_count()} CPUs, load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for competing in args.competing:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competing)]
        try:
            time.sleep(1.0 if busy else 0.0)
            for workload in workloads:
                for threads in args.threads:
                    child = subprocess.run(
                        [sys.executable, __file__, "--child", workload, str(threads), "--seconds", str(args.seconds)],
                        env=env, capture_output=True, text=True, check=True,
                    )
                    row = json.loads(child.stdout.strip().splitlines()[-1])
                    row |= {"requested_threads": threads, "competing": competing}
                    results.append(row)
                    label = f"{threads} (torch default = {row['threads']})" if threads == 0 else str(threads)
                    print(f"competing {competing}  {workload:8s} threads {label:22s} "
                          f"{row['frames_per_s']:8.2f} frames/s  ({row['frames']} frames in {row['seconds']} s)",
                          flush=True)
        finally:
            for process in busy:
                process.kill()
                process.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
