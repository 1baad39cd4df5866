"""Data-layer benchmark; prints one JSON object on stdout.

    python bench/bench_data.py [--skeleton-mb 20] [--dataset-mb 200]

- ntu_parse: MB/s of the whole-file NTU parser against the line-by-line reference (which
  converts every field, like the original NTU tooling) on generated .skeleton files, and
  against a leaner line loop that converts only x, y, z (the fairest pure-Python baseline).
- dataset: SkeletonDataset items per second with train augmentation (T=120, V=25, M=2), in
  this process and through a DataLoader with 2 workers.
- open_rss: resident memory added by opening a dataset of about --dataset-mb, reading its
  labels and one sample (in a fresh process, after pyarrow's one-time set-up, which is
  reported apart), against the dataset's size on disk.
- synthetic: seconds to generate 10 classes x 200 sequences.
- npz_import: seconds to import MSR Action3D (../shared/data/msr_action3d, 557 clips) with the
  defaults (read, check, hip-centre, carve, write), and its split counts; skipped when absent.
Timings are best-of-3 wall clock on this machine; compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import MSR_NPZ


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_skeleton_files(root: Path, target_mb: float) -> list[Path]:
    """NTU-like files: 60-150 frames, one or two bodies, values from the synthetic generator."""
    from raysearch.data.ntu import format_skeleton
    from raysearch.data.synthetic import generate_synthetic

    _, _, splits = generate_synthetic(num_classes=4, per_class=20, max_frames=150, seed=0)
    samples = [x for s in splits.values() for x in s.joints]
    files, total, k = [], 0, 0
    while total < target_mb * 1e6:
        x = samples[k % len(samples)]  # (C, T, V, M)
        bodies = [(t, f"7205759403793{1100 + m}", x[:, t, :, m].T + np.array([0.0, 0.0, 3.0]))
                  for t in range(x.shape[1]) for m in range(x.shape[3]) if np.any(x[:, t, :, m])]
        path = root / f"S001C001P001R001A{k % 60 + 1:03d}_{k}.skeleton"
        path.write_bytes(format_skeleton(x.shape[1], bodies, seed=k))
        files.append(path)
        total += path.stat().st_size
        k += 1
    return files


def parse_xyz_lines(path: Path) -> np.ndarray:
    """A lean line loop: counts as ints, x y z as floats, nothing else converted or checked."""
    xyz = []
    with open(path, "rb") as f:
        for _ in range(int(f.readline())):
            for _ in range(int(f.readline())):
                f.readline()
                for _ in range(int(f.readline())):
                    fields = f.readline().split()
                    xyz.append((float(fields[0]), float(fields[1]), float(fields[2])))
    return np.asarray(xyz, np.float32)


def bench_parse(target_mb: float) -> dict:
    from raysearch.data.ntu import parse_skeleton, parse_skeleton_reference

    with tempfile.TemporaryDirectory() as tmp:
        files = make_skeleton_files(Path(tmp), target_mb)
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        for p in files:  # warm the page cache and pyarrow's CSV machinery
            p.read_bytes()
        parse_skeleton(files[0])
        fast = best_of(lambda: [parse_skeleton(p) for p in files])
        ref = best_of(lambda: [parse_skeleton_reference(p) for p in files])
        lean = best_of(lambda: [parse_xyz_lines(p) for p in files])
        agree = all(parse_skeleton(p).equals(parse_skeleton_reference(p)) for p in files)
    return {
        "files": len(files),
        "total_mb": round(size_mb, 2),
        "fast_mb_s": round(size_mb / fast, 1),
        "reference_mb_s": round(size_mb / ref, 1),
        "speedup_vs_reference": round(ref / fast, 2),
        "xyz_only_line_loop_mb_s": round(size_mb / lean, 1),
        "speedup_vs_xyz_only_line_loop": round(lean / fast, 2),
        "parsers_agree": agree,
    }


def bench_dataset() -> dict:
    import torch
    from torch.utils.data import DataLoader

    from raysearch.data.dataset import SkeletonDataset
    from raysearch.data.synthetic import prepare_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        path = prepare_synthetic(Path(tmp) / "syn", num_classes=10, per_class=100,
                                 max_frames=150, seed=0)
        ds = SkeletonDataset(path, "train", num_frames=120, train=True, seed=0)
        n = len(ds)
        in_process = best_of(lambda: [ds[i] for i in range(n)])
        torch.set_num_threads(1)
        loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)
        list(loader)  # start-up of the worker processes is not what we measure
        workers = best_of(lambda: list(loader), repeats=2)
        x, _ = ds[0]
    return {
        "item_shape": list(x.shape),
        "samples": n,
        "samples_per_s": round(n / in_process),
        "dataloader_2_workers_samples_per_s": round(n / workers),
    }


_RSS_CHILD = r"""
import json, sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import numpy, pyarrow
from raysearch.data.format import open_dataset
start = rss_mb()
open_dataset(sys.argv[2]).split("train").joints(0)  # pyarrow's one-time set-up, not data
before = rss_mb()
ds = open_dataset(sys.argv[1])
view = ds.split("train")
labels = int(view.labels.sum()); x = view.joints(len(view) // 2)
after_open = rss_mb()
total = 0.0
for i in range(len(view)):
    total += float(view.joints(i)[0, 0, 0, 0])
after_touch = rss_mb()
print(json.dumps({"start": start, "before": before, "after_open": after_open,
                  "after_touch": after_touch}))
"""


def bench_open_rss(target_mb: float) -> dict:
    from raysearch.data.format import DatasetWriter
    from raysearch.data.layouts import NTU25_LAYOUT

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "big"
        per_sample = 3 * 100 * 25 * 2 * 4
        with DatasetWriter(out, NTU25_LAYOUT, [f"c{k}" for k in range(60)], max_persons=2,
                           max_frames=300) as writer:
            for i in range(int(target_mb * 1e6 / per_sample)):
                t = int(rng.integers(50, 151))
                writer.add("train", rng.standard_normal((3, t, 25, 2), dtype=np.float32),
                           int(rng.integers(0, 60)), f"s{i:06d}")
            writer.finish({"importer": "bench"})
        with DatasetWriter(Path(tmp) / "tiny", NTU25_LAYOUT, ["c0"], max_persons=2,
                           max_frames=300) as writer:
            writer.add("train", np.ones((3, 10, 25, 2), np.float32), 0, "tiny")
            writer.finish({"importer": "bench"})
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        result = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(out),
                                 str(Path(tmp) / "tiny")], check=True,
                                capture_output=True, text=True)
        rss = json.loads(result.stdout)
    return {
        "dataset_mb": round(size_mb, 1),
        "rss_delta_open_mb": round(rss["after_open"] - rss["before"], 1),
        "rss_delta_open_fraction_of_size": round((rss["after_open"] - rss["before"]) / size_mb, 4),
        "rss_pyarrow_first_use_mb": round(rss["before"] - rss["start"], 1),
        # Touching one value per sample faults in pages sample by sample: the map is lazy.
        "rss_delta_after_touching_every_sample_mb": round(rss["after_touch"] - rss["before"], 1),
    }


def bench_synthetic() -> dict:
    from raysearch.data.synthetic import generate_synthetic

    seconds = best_of(lambda: generate_synthetic(num_classes=10, per_class=200, seed=0))
    return {"classes": 10, "per_class": 200, "max_frames": 64, "seconds": round(seconds, 3)}


def bench_npz_import() -> dict:
    import contextlib
    import io

    from raysearch.data.format import open_dataset
    from raysearch.data.npz import prepare_npz

    if not MSR_NPZ.is_file():
        return {"skipped": f"{MSR_NPZ} not found"}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        out = Path(tmp) / "msr"
        seconds = best_of(lambda: prepare_npz(MSR_NPZ, out, overwrite=True))
        ds = open_dataset(out)
        counts = {name: len(ds.split(name)) for name in ds.split_names}
    return {"file": "msr_action3d.npz", "clips": sum(counts.values()), "splits": counts,
            "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skeleton-mb", type=float, default=20.0)
    parser.add_argument("--dataset-mb", type=float, default=200.0)
    args = parser.parse_args()
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "ntu_parse": bench_parse(args.skeleton_mb),
        "dataset": bench_dataset(),
        "open_rss": bench_open_rss(args.dataset_mb),
        "synthetic": bench_synthetic(),
        "npz_import": bench_npz_import(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
