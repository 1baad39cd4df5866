"""Training-step throughput of every preset, and how close it runs to the machine's peak.

    python bench/bench_throughput.py [--device cpu|cuda] [--threads 1] [--repeats 3]
                                     [--paper-batch 2] [--tiny-batch 32] [--compile] [--bf16]

One step = forward + backward of the pre-training loss (SkeletonMAE family) or the cross-entropy
(classifiers); no optimizer. FLOPs per step come from torch.utils.flop_counter (multiply-add = 2).
Achieved FLOP/s is divided by the machine's measured peak, taken in the same run as the best of:
- `mm`: a 2048^3 fp32 matrix product (torch.mm, MKL on CPU);
- `conv`: a 3x3 256->256 convolution on 16x32x32 (oneDNN on CPU), a GEMM in all but name.
On CPU the default is one thread, the share a Ray Train worker gets here; paper-scale presets run
at a small batch (about 300 GFLOP per sequence per step). For those, a profiled step splits the
time into convolutions, the attention products (bmm), gathers/scatters (A0 and PE at kept
tokens, mask-token scatter), Linear layers (MVAE's flatten-Linear) and the rest.

On a GPU (`--device cuda`, batch 64 by default for every preset) the run repeats with bf16 autocast
with and without torch.compile, and the peak is a bf16 8192^3 product. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import models
from harness import emit, interleave, log, machine_info, set_threads

OP_GROUPS = {
    "convolution": ("convolution", "conv2d", "conv_depthwise"),
    "attention_bmm": ("aten::bmm",),
    "gather_scatter": ("index", "gather", "scatter", "take"),
    "linear": ("aten::addmm", "aten::mm", "aten::linear"),
    "batch_norm": ("batch_norm",),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gflops(device: torch.device, repeats: int) -> dict:
    """Best GFLOP/s of large dense kernels: the denominator for 'fraction of peak'."""
    if device.type == "cuda":
        n = 8192
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        cases = {"mm_bf16": lambda: (a @ b, synchronize(device))}
        flops = {"mm_bf16": 2 * n**3}
    else:
        n = 2048
        a, b = torch.randn(n, n), torch.randn(n, n)
        x, w = torch.randn(16, 256, 32, 32), torch.randn(256, 256, 3, 3)
        cases = {"mm": lambda: a @ b, "conv": lambda: F.conv2d(x, w, padding=1)}
        flops = {"mm": 2 * n**3, "conv": 2 * 16 * 32 * 32 * 256 * 256 * 9}
    times = interleave(cases, repeats=repeats)
    runs = "wall_runs_s" if device.type == "cuda" else "cpu_runs_s"
    return {name: round(flops[name] / min(times[name][runs]) / 1e9, 1) for name in cases}


def make_step(name: str, batch: int, device: torch.device, bf16: bool, compile_model: bool):
    """The model of preset `name` and two closures running one forward + backward of it: the timed
    one (compiled if asked) and an eager one for counting FLOPs (compiled kernels bypass the counter)."""
    torch.manual_seed(0)
    model = models.build(name).to(device).train()
    config = model.config
    x = torch.randn(batch, config.num_channels, config.num_frames, config.num_joints, config.num_persons,
                    device=device)  # (N, C, T, V, M)
    y = torch.randint(0, config.num_classes, (batch,), device=device)
    pretrain = isinstance(model, models.SkeletonMAE)
    plan = model.random_masking(x, torch.Generator(device=device).manual_seed(1)) if pretrain else None
    compiled = torch.compile(model) if compile_model else model

    def step(forward=compiled):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(x, plan).loss if pretrain else F.cross_entropy(forward(x).float(), y)
        loss.backward()
        synchronize(device)

    return model, step, lambda: step(model)


def count_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def time_shares(step) -> dict:
    """Fraction of profiled self time per op group in one step (approximate on a shared machine)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    totals = {group: 0.0 for group in OP_GROUPS} | {"other": 0.0}
    for event in prof.key_averages():
        group = next((g for g, keys in OP_GROUPS.items() if any(k in event.key for k in keys)), "other")
        totals[group] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {group: round(value / whole, 3) for group, value in totals.items()}


def bench_setting(presets: list[str], batches: dict[str, int], device: torch.device, bf16: bool,
                  compile_model: bool, repeats: int, peak: float, shares: bool) -> dict:
    built, steps, flops = {}, {}, {}
    for name in presets:
        model, step, eager_step = make_step(name, batches[name], device, bf16, compile_model)
        built[name], steps[name] = model, step
        flops[name] = count_flops(eager_step)
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()  # warm-up; compiles forward and backward when asked
        if compile_model:
            log(f"{name}: compiled in {time.perf_counter() - start:.1f} s")
        model.zero_grad(set_to_none=True)
    log(f"timing {len(presets)} presets x {repeats} repetitions on {device} (bf16={bf16}, compile={compile_model})")
    # Compiled models of one class share dynamo's cache, so switching between them can recompile once
    # more: one untimed round-robin pass absorbs that.
    times = interleave(steps, repeats=repeats, warmup=1 if compile_model else 0,
                       before=lambda name: built[name].zero_grad(set_to_none=True))
    clock = "wall_s" if device.type == "cuda" else "cpu_s"
    rows = {}
    for name in presets:
        seconds = times[name][clock]
        achieved = flops[name] / seconds / 1e9
        rows[name] = {
            "batch": batches[name],
            "step_s": round(seconds, 4),
            "samples_per_s": round(batches[name] / seconds, 2),
            "samples_per_s_wall": round(batches[name] / times[name]["wall_s"], 2),
            "gflop_per_sample": round(flops[name] / batches[name] / 1e9, 4),
            "achieved_gflops": round(achieved, 1),
            "fraction_of_peak": round(achieved / peak, 3),
        }
        if shares:
            built[name].zero_grad(set_to_none=True)
            rows[name]["time_shares"] = time_shares(steps[name])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-batch", type=int, default=None, help="default: 2 on CPU, 64 on GPU")
    parser.add_argument("--tiny-batch", type=int, default=None, help="default: 32 on CPU, 64 on GPU")
    parser.add_argument("--presets", nargs="+", default=models.list_presets())
    parser.add_argument("--bf16", action="store_true", help="CPU only: autocast to bfloat16 (GPU runs always try it)")
    parser.add_argument("--compile", action="store_true", help="CPU only: torch.compile (GPU runs always try it)")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if not gpu:
        set_threads(args.threads)
    paper_batch = args.paper_batch or (64 if gpu else 2)
    tiny_batch = args.tiny_batch or (64 if gpu else 32)
    batches = {name: paper_batch if name.endswith("ntu60") else tiny_batch for name in args.presets}

    log(f"measuring the peak on {device}")
    peaks = peak_gflops(device, args.repeats)
    peak = max(peaks.values())
    result = {"machine": machine_info(None if gpu else args.threads), "device": str(device),
              "peak_gflops": peaks, "peak_used_gflops": peak,
              "clock": "wall seconds (CUDA-synchronized)" if gpu else "process CPU seconds, median",
              "settings": {}}
    if gpu:
        settings = [("bf16", True, False), ("bf16+compile", True, True)]
    else:
        label = ("bf16" if args.bf16 else "fp32") + ("+compile" if args.compile else "")
        settings = [(label, args.bf16, args.compile)]
    for label, bf16, compile_model in settings:
        result["settings"][label] = bench_setting(args.presets, batches, device, bf16, compile_model,
                                                  args.repeats, peak, shares=not gpu and not compile_model)
        for name, row in result["settings"][label].items():
            log(f"{label} {name}: {row['samples_per_s']} samples/s, {row['fraction_of_peak']:.0%} of peak")
    emit(result)


if __name__ == "__main__":
    main()
