"""What every benchmark here shares: interleaved timing, the machine's description, JSON out.

The machine is shared (other engineers run tests on the same 2 cores), so benchmarks compare
cases measured side by side in one run rather than absolute times: `interleave` runs the cases
round-robin, rotating their order every repetition, and keeps the median of each. It records two
clocks per run: wall seconds, and this process's CPU seconds. With one torch thread the CPU clock
counts the work done and not the time spent waiting for a core that another job holds, so it is
the steadier basis for ratios; results carry both.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

# MSR Action3D, the real dataset the accuracy and search benchmarks use: read from ../shared beside
# the repository, never copied into it.
MSR_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "msr_action3d" / "msr_action3d.npz"


def log(*parts) -> None:
    """Progress goes to stderr; stdout carries only the one JSON object."""
    sys.stderr.write(" ".join(["[bench]", *map(str, parts)]) + "\n")  # one write: threads' lines stay whole
    sys.stderr.flush()


def emit(result: dict) -> None:
    print(json.dumps(result))


def set_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def interleave(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
               before: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Run every case `warmup` + `repeats` times round-robin; median wall and CPU seconds.

    `before(name)`, if given, runs untimed before each timed call (e.g. clearing gradients).
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            if before:
                before(name)
            cases[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if before:
                before(name)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            cases[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {n: {"wall_s": statistics.median(wall[n]), "cpu_s": statistics.median(cpu[n]),
                "wall_runs_s": [round(v, 4) for v in wall[n]], "cpu_runs_s": [round(v, 4) for v in cpu[n]]}
            for n in names}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int | None = None) -> dict:
    """Where the numbers come from: CPU, cores, memory, library versions, GPU if any."""
    import torch

    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "avx512": " avx512f " in flags,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if threads is not None:
        info["torch_threads"] = threads
    return info


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
