"""Peak resident memory of one training worker per preset at batch 64. Prints one JSON object.

    python bench/bench_memory.py [--batches 32 64] [--fit-batches 4 8] [--check-batch 2] [--jobs 2]

Every measurement runs in a fresh Python process that imports torch and `models`, builds the
preset, allocates Adam's state, and runs one training step (forward, backward, optimizer step);
it reports its peak RSS (ru_maxrss) and the RSS before the step. With the paper's global batch 64,
each of a trial's 2 workers holds 32 sequences; a single worker holds 64. Both are reported.

Tiny presets are measured at those batches directly. A paper-scale step costs about 300 GFLOP per
sequence, minutes at batch 64 on this CPU, so those are measured at `--fit-batches` and extrapolated
with a straight line (activations grow linearly with the batch). Below batch 4 the allocator's
fixed costs bend the curve (the slope from 2 to 4 came out 20-45% above the one from 4 to 8), so
the line goes through 4 and 8; one extra point (`--check-batch`, mae-ntu60) shows how far it is
off there. Rows say which numbers are measured. A Ray Train worker adds the Ray runtime on top:
bench_ray_overhead.py reports that worker's RSS at entry. Measurements run two at a time
(`--jobs`), one per core: each is its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import models
from harness import emit, log, machine_info

_CHILD = r"""
import json, sys
import torch
import torch.nn.functional as F
import models
sys.path.insert(0, sys.argv[3])
from harness import peak_rss_mb, rss_mb

torch.set_num_threads(1)
name, batch = sys.argv[1], int(sys.argv[2])
imported = rss_mb()
torch.manual_seed(0)
model = models.build(name).train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
for p in model.parameters():  # allocate Adam's two moments up front, as in every step after the first
    p.grad = torch.zeros_like(p)
optimizer.step()
optimizer.zero_grad(set_to_none=True)
c = model.config
x = torch.randn(batch, c.num_channels, c.num_frames, c.num_joints, c.num_persons)  # (N, C, T, V, M)
before = rss_mb()
if isinstance(model, models.SkeletonMAE):
    loss = model(x).loss
else:
    loss = F.cross_entropy(model(x), torch.randint(0, c.num_classes, (batch,)))
loss.backward()
optimizer.step()
print(json.dumps({"imported_mb": imported, "before_step_mb": before, "peak_mb": peak_rss_mb()}))
"""


def measure(name: str, batch: int) -> dict:
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", _CHILD, name, str(batch), here],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def line_through(points: dict[int, float]) -> tuple[float, float]:
    """(intercept, slope) of the straight line through two (batch, MB) points."""
    (b0, m0), (b1, m1) = sorted(points.items())
    slope = (m1 - m0) / (b1 - b0)
    return m0 - slope * b0, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 64],
                        help="per-worker batches to report (2 workers x 32 = the paper's 64)")
    parser.add_argument("--fit-batches", nargs=2, type=int, default=[4, 8])
    parser.add_argument("--check-batch", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=models.list_presets())
    parser.add_argument("--jobs", type=int, default=2,
                        help="measurements run at once (each its own process and core; peak RSS is per process)")
    args = parser.parse_args()
    wanted = [(name, batch) for name in args.presets
              for batch in (args.batches if name.endswith("tiny") else args.fit_batches)]
    if args.check_batch and "mae-ntu60" in args.presets:
        wanted.append(("mae-ntu60", args.check_batch))
    wanted.sort(key=lambda job: (job[0].endswith("tiny"), -job[1]))  # the longest first: the two jobs finish together

    def run(job: tuple[str, int]) -> dict:
        log(f"{job[0]}: batch {job[1]}")
        return measure(*job)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        measured = dict(zip(wanted, pool.map(run, wanted)))
    rows = {}
    for name in args.presets:
        row: dict = {"params": models.count_parameters(models.build(name))}
        if name.endswith("tiny"):
            for batch in args.batches:
                m = measured[name, batch]
                row[f"peak_rss_mb_batch{batch}"] = round(m["peak_mb"], 1)
                row[f"step_rss_mb_batch{batch}"] = round(m["peak_mb"] - m["before_step_mb"], 1)
            row["imported_and_built_mb"] = round(m["before_step_mb"], 1)
            row["measured"] = True
        else:
            peaks = {batch: measured[name, batch]["peak_mb"] for batch in args.fit_batches}
            intercept, slope = line_through(peaks)
            row.update({f"peak_rss_mb_batch{b}": round(v, 1) for b, v in peaks.items()})
            row["imported_and_built_mb"] = round(measured[name, args.fit_batches[-1]]["before_step_mb"], 1)
            row["mb_per_sequence"] = round(slope, 1)
            for batch in args.batches:
                row[f"peak_rss_mb_batch{batch}"] = round(intercept + slope * batch)
            row["measured"] = False
            row["extrapolated_from_batches"] = list(args.fit_batches)
            if (name, args.check_batch) in measured and args.check_batch not in args.batches:
                real = measured[name, args.check_batch]["peak_mb"]
                predicted = intercept + slope * args.check_batch
                row["linearity_check"] = {"batch": args.check_batch, "measured_mb": round(real, 1),
                                          "predicted_mb": round(predicted, 1),
                                          "error_fraction": round((predicted - real) / real, 3)}
        rows[name] = row
    emit({"machine": machine_info(1), "per_worker_batches": args.batches, "presets": rows})


if __name__ == "__main__":
    main()
