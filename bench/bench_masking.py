"""Does masking buy speed, as in MAE? Prints one JSON object on stdout.

    python bench/bench_masking.py [--batch 1] [--repeats 3] [--threads 1]

For each paper-scale variant (mae-ntu60, mvae-ntu60, mvqvae-ntu60) and frame = joint mask
ratio r in 0.4 ... 0.9, against r = 0.05 (91% of tokens kept):
- encoder: `forward_encoder(x, plan)` + backward of its sum (the encoder sees the kept tokens only);
- step: `model(x, plan).loss.backward()`, the whole pre-training step (the decoder still runs on the
  full grid, so its cost does not shrink with r).
Each ratio gets its own model (MVAE's flatten-Linear is sized by the kept grid) with the same seed,
one fixed mask plan, and the same input. All cases of a variant are timed round-robin in one run;
ratios are of median process-CPU seconds (one torch thread), with the wall-clock ratios beside them.
FLOP ratios (torch.utils.flop_counter, forward + backward) say what the ratio would be if every
FLOP cost the same; a measured ratio above its FLOP ratio points at per-token overheads.
Targets at r = 0.4: encoder <= 0.45, step <= 0.75.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import models
from harness import emit, interleave, log, machine_info, set_threads

VARIANTS = ("mae-ntu60", "mvae-ntu60", "mvqvae-ntu60")
BASELINE_RATIO = 0.05
RATIOS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TARGET_ENCODER, TARGET_STEP = 0.45, 0.75


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_variant(preset: str, batch: int, repeats: int) -> dict:
    ratios = (BASELINE_RATIO, *RATIOS)
    base = models.preset_config(preset)
    x = torch.randn(batch, base.num_channels, base.num_frames, base.num_joints, base.num_persons,
                    generator=torch.Generator().manual_seed(0))  # (N, C, T, V, M)
    built, cases, flops, grids = {}, {}, {}, {}
    for r in ratios:
        torch.manual_seed(0)
        model = models.build(preset, frame_mask_ratio=r, joint_mask_ratio=r).train()
        plan = model.random_masking(x, torch.Generator().manual_seed(1))
        built[r] = model
        grids[r] = model.config.kept_grid

        def encoder(model=model, plan=plan):
            model.forward_encoder(x, plan).sum().backward()

        def step(model=model, plan=plan):
            model(x, plan).loss.backward()

        cases[f"encoder@{r}"], cases[f"step@{r}"] = encoder, step
        flops[f"encoder@{r}"], flops[f"step@{r}"] = count_flops(encoder), count_flops(step)  # also the warm-up
    log(f"{preset}: timing {len(cases)} cases x {repeats} repetitions at batch {batch}")
    times = interleave(cases, repeats=repeats, warmup=0,
                       before=lambda name: built[float(name.split("@")[1])].zero_grad(set_to_none=True))

    def ratio_of(kind: str, r: float, clock: str) -> float:
        return times[f"{kind}@{r}"][clock] / times[f"{kind}@{BASELINE_RATIO}"][clock]

    t, v = base.num_frames, base.num_joints
    rows = []
    for r in ratios:
        cfg = built[r].config
        rows.append({
            "mask_ratio": r,
            "kept_grid": list(grids[r]),
            "kept_token_fraction": round(cfg.kept_frames * cfg.kept_joints / (t * v), 3),
            "encoder_cpu_s": round(times[f"encoder@{r}"]["cpu_s"], 3),
            "step_cpu_s": round(times[f"step@{r}"]["cpu_s"], 3),
            "encoder_ratio": round(ratio_of("encoder", r, "cpu_s"), 3),
            "step_ratio": round(ratio_of("step", r, "cpu_s"), 3),
            "encoder_ratio_wall": round(ratio_of("encoder", r, "wall_s"), 3),
            "step_ratio_wall": round(ratio_of("step", r, "wall_s"), 3),
            "encoder_flop_ratio": round(flops[f"encoder@{r}"] / flops[f"encoder@{BASELINE_RATIO}"], 3),
            "step_flop_ratio": round(flops[f"step@{r}"] / flops[f"step@{BASELINE_RATIO}"], 3),
            "encoder_gflop_per_sample": round(flops[f"encoder@{r}"] / batch / 1e9, 1),
            "step_gflop_per_sample": round(flops[f"step@{r}"] / batch / 1e9, 1),
        })
    at = next(row for row in rows if row["mask_ratio"] == 0.4)
    return {
        "rows": rows,
        "at_0.4": {"encoder_ratio": at["encoder_ratio"], "encoder_target": TARGET_ENCODER,
                   "encoder_met": at["encoder_ratio"] <= TARGET_ENCODER,
                   "step_ratio": at["step_ratio"], "step_target": TARGET_STEP,
                   "step_met": at["step_ratio"] <= TARGET_STEP},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1,
                        help="sequences per step (N, each with M=2 persons); a paper-scale step is ~300-430 GFLOP each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    set_threads(args.threads)
    result = {"machine": machine_info(args.threads), "batch": args.batch, "repeats": args.repeats,
              "baseline_mask_ratio": BASELINE_RATIO, "clock": "process CPU seconds, median",
              "variants": {}}
    for preset in args.variants:
        result["variants"][preset] = bench_variant(preset, args.batch, args.repeats)
        log(preset, result["variants"][preset]["at_0.4"])
    emit(result)


if __name__ == "__main__":
    main()
