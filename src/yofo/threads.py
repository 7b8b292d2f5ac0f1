"""One thread policy for inference: ``yofo segment``, ``eval``, ``demo`` and ``bench`` use :data:`DEFAULT_THREADS`.

torch's own default (one intra-op thread per physical core) collapses as soon as another process wants a
core: every parallel operation waits for its slowest thread, and a thread without a core stalls them all.
Measured with ``benchmarks/threads.py`` on the 2-core development machine (README, "Threads"): beside one
busy process, 2 threads ran at 0.36× (the shipped model, 96×160 frames) to 0.71× (``paper``, 384×640) the
speed of 1 thread; on the idle machine 1 thread was as fast on the small frames and 0.45–0.63× on the
large ones. One thread never collapses; ``--threads 0`` (torch's default) or ``--threads N`` is for large
frames on an idle machine.
"""

from __future__ import annotations

import argparse

from yofo.errors import InputError

DEFAULT_THREADS = 1


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--threads`` option every inference command shares."""
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, metavar="N",
        help=f"torch CPU threads (default {DEFAULT_THREADS}: never slowed down by other jobs on the machine; "
             f"0: torch's default, one per core, faster for large frames on an idle machine)",
    )


def set_threads(threads: int) -> int:
    """Apply the thread policy: ``threads`` >= 1 torch intra-op threads, 0 leaves torch's default.

    Returns:
        the number of threads torch now uses.

    Raises:
        InputError: a negative count.
    """
    import torch  # here: building the command line parser needs no torch

    if threads < 0:
        raise InputError(f"threads: {threads} must be >= 1, or 0 for torch's default")
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
