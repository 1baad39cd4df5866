"""Collect the benchmarks' JSON into results/latest.json and rewrite the results section of README.md.

    python bench/report.py --raw bench/results/raw --out bench/results/latest.json \
                           --readme bench/README.md [--wall-s SECONDS]

Only the text between the README's `<!-- results:start -->` and `<!-- results:end -->` markers is
replaced; everything else in the README is kept as written.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
NAMES = ("data", "masking", "throughput", "throughput_gpu", "memory", "ray_overhead", "search", "accuracy")
# `bench_search_msr.py` replay (BENCH_MSR=1 in run_all) and its live comparison (run by hand).
NAMES += ("search_msr", "search_msr_live")


def table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def status(met: bool | None) -> str:
    return "-" if met is None else ("**met**" if met else "**missed**")


def machine_section(results: dict, wall_s: float | None) -> str:
    machine = next((r["machine"] for r in results.values() if "cpu" in r.get("machine", {})), {})
    ray_version = results.get("ray_overhead", {}).get("machine", {}).get("ray")
    gpu = results.get("throughput_gpu", {}).get("machine", {}).get("gpu")
    parts = [f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
             + (" (AVX-512)" if machine.get("avx512") else ""),
             f"{machine.get('memory_gb', '?')} GB RAM", f"torch {machine.get('torch', '?')}",
             f"ray {ray_version or '?'}", f"python {machine.get('python', '?')}",
             f"GPU: {gpu}" if gpu else "no GPU"]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"Machine: {', '.join(parts)}. Shared with other engineers' test runs while measured.\n"
    text += f"Run: {when}"
    if wall_s is not None:
        text += f"; `bench/run_all` took {wall_s / 60:.1f} min."
    return text


def targets_section(results: dict, wall_s: float | None) -> str:
    rows = []
    masking = results.get("masking", {}).get("variants", {})
    for preset, v in masking.items():
        at = v["at_0.4"]
        rows.append([f"masking 0.4/0.4 vs 0.05/0.05, encoder fwd+bwd ({preset})", f"<= {at['encoder_target']}x",
                     f"{at['encoder_ratio']}x", status(at["encoder_met"])])
        rows.append([f"masking 0.4/0.4 vs 0.05/0.05, whole pre-training step ({preset})", f"<= {at['step_target']}x",
                     f"{at['step_ratio']}x", status(at["step_met"])])
    ray = results.get("ray_overhead", {})
    if ray.get("summary", {}).get("fixed_cost_per_trial_s") is not None:
        fixed = ray["summary"]["fixed_cost_per_trial_s"]
        rows.append(["Ray fixed cost per trial (tiny 2-worker trial minus the same in-process)", "<= 10 s",
                     f"{fixed} s", status(fixed <= 10.0)])
    summary = ray.get("summary", {})
    for workers, key, goal in ((1, "search_1_worker_fixed_cost_s", "target_1_worker_s"),
                               (2, "search_2_workers_fixed_cost_s", "target_2_workers_s")):
        if summary.get(key) is not None:
            rows.append([f"fixed cost of one more {workers}-worker trial in a search (marginal trial minus its "
                         "in-process time)", f"<= {summary[goal]:g} s", f"{summary[key]} s",
                         status(summary[key] <= summary[goal])])
    search = results.get("search", {}).get("summary")
    if search:
        rows.append(["search compute to the same val_acc, random+FIFO / TPE+ASHA (median of seeds)",
                     f">= {search['target_ratio']}x", search_ratio(search, "epochs"), status(search["met"])])
    for t in results.get("accuracy", {}).get("targets", []):
        rows.append([f"MSR Action3D test accuracy: {t['target']} (mean of seeds)", f">= {t['goal_points']:+g} points",
                     f"{t['difference_points']:+.1f} points", status(t["met"])])
    msr = results.get("search_msr", {}).get("summary")
    if msr:
        r = msr["ratios_random_fifo_to_tpe_asha"]["epochs"]
        rows.append([f"MSR Action3D search (replayed, {results['search_msr']['seeds']} seeds): compute to random's "
                     "median best, random+FIFO / TPE+ASHA, final best no worse", f">= {msr['target_ratio']}x",
                     f"{r['ratio_of_medians']}x epochs (bootstrap 90%: {r['bootstrap_90'][0]}-{r['bootstrap_90'][1]}x)"
                     + ("" if msr["final_best_no_worse"] else ", final best worse"), status(msr["met"])])
    if wall_s is not None:
        rows.append(["`bench/run_all` wall time", "< 20 min", f"{wall_s / 60:.1f} min", status(wall_s < 1200)])
    return table(["target", "goal", "measured", "status"], rows)


def masking_section(result: dict) -> str:
    rows = []
    for preset, v in result["variants"].items():
        for row in v["rows"]:
            rows.append([preset, row["mask_ratio"], f"{row['kept_grid'][0]}x{row['kept_grid'][1]}",
                         f"{row['kept_token_fraction']:.0%}", row["encoder_cpu_s"], row["encoder_ratio"],
                         row["encoder_flop_ratio"], row["step_cpu_s"], row["step_ratio"], row["step_flop_ratio"]])
    head = (f"Batch {result['batch']} sequences, {result['machine'].get('torch_threads')} torch thread, median of "
            f"{result['repeats']} interleaved repetitions, {result['clock']}. Ratios are against mask ratio "
            f"{result['baseline_mask_ratio']}; FLOP ratios from torch's flop counter.\n\n")
    return head + table(["preset", "frame=joint mask", "kept grid T'k x Uk", "tokens kept", "encoder s",
                         "encoder ratio", "encoder FLOP ratio", "step s", "step ratio", "step FLOP ratio"], rows)


def throughput_section(result: dict, label: str) -> str:
    peaks = ", ".join(f"{k} {v} GFLOP/s" for k, v in result["peak_gflops"].items())
    text = (f"Device {result['device']}, {result['clock']}. Measured peak ({peaks}); fractions use the best, "
            f"{result['peak_used_gflops']} GFLOP/s.\n\n")
    for setting, rows in result["settings"].items():
        shares = any("time_shares" in r for r in rows.values())
        header = ["preset", "batch", "samples/s", "GFLOP/sample (fwd+bwd)", "GFLOP/s", "of peak"]
        if shares:
            header += ["conv", "bmm", "gather/scatter", "Linear", "BN", "other"]
        body = []
        for name, r in rows.items():
            row = [name, r["batch"], r["samples_per_s"], r["gflop_per_sample"], r["achieved_gflops"],
                   f"{r['fraction_of_peak']:.0%}"]
            if shares:
                s = r.get("time_shares", {})
                row += [f"{s.get(k, 0):.0%}" for k in ("convolution", "attention_bmm", "gather_scatter", "linear",
                                                        "batch_norm", "other")]
            body.append(row)
        text += f"{label}, {setting}:\n\n" + table(header, body) + "\n\n"
    return text.rstrip()


def memory_section(result: dict, ray: dict | None) -> str:
    batches = result["per_worker_batches"]
    rows = []
    for name, r in result["presets"].items():
        rows.append([name, f"{r['params'] / 1e6:.2f}M", *[r.get(f"peak_rss_mb_batch{b}") for b in batches],
                     r.get("mb_per_sequence"), "measured" if r["measured"] else
                     f"extrapolated from batches {r['extrapolated_from_batches']}"])
    text = table(["preset", "params", *[f"peak RSS MB, batch {b}" for b in batches], "MB per extra sequence",
                  "how"], rows)
    check = result["presets"].get("mae-ntu60", {}).get("linearity_check")
    if check:
        text += (f"\n\nLinearity check (mae-ntu60, batch {check['batch']}): measured {check['measured_mb']} MB, "
                 f"line predicts {check['predicted_mb']} MB ({check['error_fraction']:+.1%}).")
    if ray:
        entry = ray["noop_2_worker_fit"]["torch_trainer_poll_0.2s"]["worker_rss_at_entry_mb"]
        text += (f" A Ray Train (TorchTrainer) worker holds {max(entry)} MB at train-function entry, before the "
                 "model exists; the rows above include torch and the model but not Ray's runtime.")
    return text


def ray_section(result: dict) -> str:
    stage_names = {
        "controller_actor_start_s": "controller actor start",
        "placement_group_cleaner_start_s": "PlacementGroupCleaner start",
        "worker_actors_created_s": "2 worker actors created",
        "train_context_on_workers_s": "train context on workers (backend imports)",
        "process_group_s": "process group (gloo)",
        "fit_start_to_train_fn_launch_s": "fit() to train fn launch",
        "train_fn_entry_to_first_report_s": "train fn entry to first report",
        "train_fn_return_to_fit_return_s": "train fn return to fit() return (teardown)",
    }
    cases = result["noop_2_worker_fit"]
    header = ["stage (s)", *cases]
    rows = [["**wall**", *[f"**{c['wall_s']}**" for c in cases.values()]]]
    for key, label in stage_names.items():
        rows.append([label, *[c["stages_s"].get(key) for c in cases.values()]])
    rows.append(["worker RSS at entry, MB", *[max(c["worker_rss_at_entry_mb"]) for c in cases.values()]])
    text = f"`ray.init` (local, dashboard on): {result['ray_init_s']} s.\n\nNo-op 2-worker fit:\n\n" + table(header, rows)
    tune = result.get("tune_1_trial")
    if tune:
        text += "\n\nOne trial inside Tune (`Tuner.fit()` wall, 1 sample):\n\n" + table(
            ["plain function trial", "function trial fitting a no-op TorchTrainer, poll 2 s", "the same, poll 0.2 s"],
            [[tune["function_trial_s"], tune["torch_trainer_trial_poll_2s_s"], tune["torch_trainer_trial_poll_0.2s_s"]]])
    fixed = result.get("fixed_cost_per_trial")
    if fixed:
        cases = {"search_1_worker": "one-worker trial (Tune function, reused actor)",
                 "plain_tune_function": "plain no-op Tune function",
                 "search_2_workers_torch_trainer": "two-worker trial (TorchTrainer)"}
        rows = [[label, fixed[k]["one_trial_run_s"], fixed[k]["4_trial_run_s"], fixed[k]["marginal_trial_s"],
                 fixed[k]["fixed_cost_per_trial_s"]] for k, label in cases.items() if k in fixed]
        text += (f"\n\nFixed cost per trial of a search, side by side ({fixed['trial']}; a search of "
                 f"{fixed['trials_in_long_run']} trials against one of 1, so start-up paid once per search cancels; "
                 f"the trial takes {fixed['in_process_trial_s']} s in-process):\n\n")
        text += table(["trial", "search of 1 trial, s", f"search of {fixed['trials_in_long_run']} trials, s",
                       "marginal trial, s", "fixed cost per trial, s"], rows)
    real = result.get("real_trial")
    if real:
        stages = real.get("fit_trial_stages_s") or {}
        text += (f"\n\nTiny real trial ({real['trial']}): `fit_trial` {real['fit_trial_wall_s']} s against "
                 f"{real['in_process_wall_s']} s in-process (warm process, all cores) = {real['ratio_ray_to_in_process']}x; "
                 f"**fixed cost {real['fixed_cost_s']} s per trial**. Inside `fit_trial`: "
                 + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v} s" for k, v in stages.items()) + ".")
    return text


def data_section(result: dict) -> str:
    p, d, o, s = result["ntu_parse"], result["dataset"], result["open_rss"], result["synthetic"]
    return table(["measure", "value"], [
        ["NTU .skeleton parse (MB/s)", f"{p['fast_mb_s']} ({p['speedup_vs_reference']}x the reference parser, "
                                       f"{p['speedup_vs_xyz_only_line_loop']}x a lean xyz-only line loop)"],
        ["SkeletonDataset items/s with augmentation, in process", d["samples_per_s"]],
        ["the same through a DataLoader with 2 workers", d["dataloader_2_workers_samples_per_s"]],
        [f"RSS added by opening a {o['dataset_mb']} MB dataset (MB)", o["rss_delta_open_mb"]],
        [f"synthetic data, {s['classes']} classes x {s['per_class']} sequences (s)", s["seconds"]],
    ])


def search_ratio(summary: dict, unit: str) -> str:
    """`2.1x`, or which median run never reached the target (no ratio then)."""
    value = summary[f"{unit}_ratio_random_to_tpe_asha"]
    if value is not None:
        return f"{value}x ({unit.replace('_', '-')})"
    missed = [m for m, reached in summary.get("median_reached", {}).items() if not reached]
    return f"no ratio: median of {' and '.join(missed) or 'a method'} never reached the target"


def search_section(result: dict) -> str:
    st = result["settings"]
    trials = st["num_samples"]
    trials = (f"{trials['random_fifo']} random / {trials['tpe_asha']} TPE+ASHA" if isinstance(trials, dict)
              else str(trials))
    text = (f"{st['preset']}, {st['synthetic']} synthetic sequences (val {st.get('val_fraction', 0.1)} of train "
            f"subjects), {trials} trials of "
            f"{st['pretrain_epochs']} + {st['finetune_epochs']} epochs, {st['trial_workers']} worker per trial, "
            f"{st['concurrent_trials']} trials at once; ASHA grace {st['asha']['grace_period']}, reduction "
            f"{st['asha']['reduction_factor']}; TPE after {st['tpe_startup_trials']} random trials. Target val_acc "
            f"{result['target_val_acc']} (median of random search's best fine-tuned val_acc; the pre-training kNN "
            f"proxy does not count).\n\n")
    rows = []
    for method, m in result["methods"].items():
        per_seed = "; ".join(f"seed {seed}: best {v['final_best_val_acc']}, {v['epochs'] if v['reached'] else 'not reached'}"
                             f" / {v['epochs_total']} epochs" for seed, v in m["per_seed"].items())
        rows.append([method, m["median_epochs_to_target"], m["median_trial_s_to_target"], m["median_epochs_total"],
                     per_seed])
    text += table(["method", "median epochs to target", "median trial-seconds to target", "median epochs in all",
                   "per seed: final best, epochs to target / total"], rows)
    summary = result["summary"]
    if summary["epochs_ratio_random_to_tpe_asha"] is None:
        text += f"\n\nRandom / TPE+ASHA: {search_ratio(summary, 'epochs')} (target {summary['target_ratio']}x)."
    else:
        text += (f"\n\nRandom / TPE+ASHA: {search_ratio(summary, 'epochs')}, "
                 f"{search_ratio(summary, 'trial_seconds')} (target {summary['target_ratio']}x).")
    return text


def accuracy_section(result: dict) -> str:
    st = result["settings"]
    text = (f"MSR Action3D cross-subject ({st['data'].rsplit('/', 1)[-1]}, imported with `prepare npz` defaults), "
            f"seeds {st['seeds']}, {st['frames']} frames; our recipe {st['pretrain_epochs']} pre-training + "
            f"{st['finetune_epochs']} fine-tuning epochs, the public recipe {st['public_epochs']} epochs; "
            f"{st['jobs']} processes of one torch thread on {st['device']}, {result['wall_s'] / 3600:.1f} h. Test "
            "accuracy of each run's best-validation classifier; wall seconds per run, with the shared "
            "pre-training in parentheses.")
    if result.get("merged_from"):
        text += (f" Merged from {len(result['merged_from'])} runs with the same settings ("
                 + ", ".join(f"`{m['file']}`" for m in result["merged_from"])
                 + "; each row's `source` in the JSON; which comparisons span two runs: Findings below).")
    return text + "\n\n" + result["markdown"]


def search_msr_section(result: dict, live: dict | None) -> str:
    rec = result["recorded"]
    text = (f"{rec['dataset']}; {result['configurations']} configurations "
            f"({result['pretrain_keys']} pre-training keys) "
            f"recorded once with {rec['pretrain_epochs']} pre-training + {rec['finetune_epochs']} fine-tuning epochs "
            f"({rec.get('record_wall_s', '?')} process-seconds; `{result['curves_file']}`), replayed through "
            f"`make_tuner`'s searcher and scheduler, {result['seeds']} seeds per method, {result['max_concurrent']} "
            f"trials at once, pre-training charged once per key per search. Target val_acc "
            f"{result['target_val_acc']} (median over seeds of random+FIFO's best; validation split only).\n\n")

    def iqr(s: dict) -> str:
        if s["median"] is None:
            return "never"
        return f"{s['median']} [{s['q1']}-{s['q3'] if s['q3'] is not None else 'never'}]"

    rows = []
    for name, m in result["methods"].items():
        sched = m["scheduler"]
        how = f"{m['sampler']['type']} + {sched['type']}" + (
            f" ({sched.get('time_attr', 'finetune_epoch')}, grace {sched['grace_period']}, "
            f"rf {sched['reduction_factor']})"
            if sched["type"] == "asha" else "")
        fb = m["final_best_val_acc"]
        rows.append([name, how, f"{m['num_samples']} ({m['stopped_early_median']} stopped)",
                     f"{m['reached_fraction']:.0%}", iqr(m["epochs_to_target"]),
                     f"{m['epochs_to_target']['min']}-{m['epochs_to_target']['max'] or 'never'}",
                     iqr(m["wall_s_to_target"]), f"{fb['median']} ({fb['min']}-{fb['max']})",
                     m["epochs_total"]["median"]])
    text += table(["method", "sampler + scheduler", "trials (median stopped early)", "seeds reaching target",
                   "epochs to target, median [IQR]", "epochs to target, range", "wall s to target, median [IQR]",
                   "final best val_acc, median (range)", "epochs in all, median"], rows)
    summary = result["summary"]
    for unit, label in (("epochs", "trial epochs"), ("wall_s", "recorded wall seconds")):
        r = summary["ratios_random_fifo_to_tpe_asha"][unit]
        text += (f"\n\nrandom+FIFO / TPE+ASHA, {label} to the target: {r['ratio_of_medians']}x at the medians "
                 f"({r['ratio_at_q1']}x at the first quartiles, {r['ratio_at_q3']}x at the third; "
                 "bootstrap 90% interval "
                 f"of the ratio of medians {r['bootstrap_90'][0]}-{r['bootstrap_90'][1]}x).")
    bound = result.get("stopping_bound")
    if bound and bound.get("winners"):
        rows = [[g, b["epochs_to_target_median"], f"{b['fifo_over_oracle']}x"] for g, b in bound["by_grace"].items()]
        text += (f"\n\nHeadroom of early stopping with random proposals: {bound['winners']} of "
                 f"{bound['configurations']} configurations ever reach the target, at fine-tuning epochs "
                 f"{bound['winner_reach_epochs']}. An oracle scheduler that stops every other trial after "
                 f"`grace` fine-tuning epochs (pre-training charged once per key; one trial at a time, "
                 f"{bound['draws']} random orders) against FIFO's median of "
                 f"{bound['fifo_epochs_to_target_median']} epochs:\n\n")
        text += table(["grace (fine-tuning epochs)", "oracle epochs to target, median", "FIFO / oracle"], rows)
    corr = result.get("correlations", {})
    if corr:
        rows = [[name, c["spearman"], c["p"], c["n"]] for name, c in corr.items()]
        text += "\n\nSpearman correlation over the grid with the fine-tuned result (permutation p):\n\n"
        text += table(["signal", "rho", "p", "n"], rows)
    if live:
        rows = [[m, v["trials"], v["pretrain_epochs"], v["finetune_epochs"], v["wall_s"],
                 None if v["best_val_acc"] is None else round(v["best_val_acc"], 4)]
                for m, v in live["live"].items()]
        text += (f"\n\nLive, equal wall-clock budget ({live['time_box_s'] / 2:.0f} s each, `budget.time_limit_s`), "
                 "real searches on MSR Action3D with `search_spaces/msr.yaml` and its random+FIFO variant:\n\n")
        text += table(["method", "trials", "pre-training epochs", "fine-tuning epochs", "wall s", "best val_acc"], rows)
    return text


def render(results: dict, wall_s: float | None) -> str:
    parts = [machine_section(results, wall_s), "### Targets\n\n" + targets_section(results, wall_s)]
    if "masking" in results:
        parts.append("### Masking (`bench_masking.py`)\n\n" + masking_section(results["masking"]))
    if "throughput" in results:
        parts.append("### Step throughput (`bench_throughput.py`)\n\n" + throughput_section(results["throughput"], "CPU"))
    if "throughput_gpu" in results:
        parts.append("### Step throughput on GPU\n\n" + throughput_section(results["throughput_gpu"], "GPU"))
    else:
        parts.append("### Step throughput on GPU\n\nNot measured: no GPU machine was available to this run. "
                     "`bench/run_all` adds `bench_throughput.py --device cuda` (bf16, with and without "
                     "torch.compile) wherever torch sees a GPU.")
    if "memory" in results:
        parts.append("### Memory (`bench_memory.py`)\n\n" + memory_section(results["memory"], results.get("ray_overhead")))
    if "ray_overhead" in results:
        parts.append("### Ray overhead (`bench_ray_overhead.py`)\n\n" + ray_section(results["ray_overhead"]))
    if "data" in results:
        parts.append("### Data (`bench_data.py`)\n\n" + data_section(results["data"]))
    if "search" in results:
        parts.append("### Search efficiency (`bench_search.py`)\n\n" + search_section(results["search"]))
    if "accuracy" in results:
        parts.append("### Accuracy on real skeletons (`bench_accuracy.py`)\n\n" + accuracy_section(results["accuracy"]))
    if "search_msr" in results:
        parts.append("### Search efficiency on MSR Action3D (`bench_search_msr.py`)\n\n"
                     + search_msr_section(results["search_msr"], results.get("search_msr_live")))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--readme", type=Path, required=True)
    parser.add_argument("--wall-s", type=float, default=None)
    args = parser.parse_args()
    # A benchmark not run this time keeps its last result (raw/ is not committed; latest.json is).
    previous = json.loads(args.out.read_text())["benchmarks"] if args.out.exists() else {}
    results = {}
    for name in NAMES:
        raw = args.raw / f"{name}.json"
        if raw.exists():
            results[name] = json.loads(raw.read_text())
        elif name in previous:
            results[name] = previous[name]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run_all_wall_s": args.wall_s, "benchmarks": results}, indent=1) + "\n")
    readme = args.readme.read_text() if args.readme.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in readme or END not in readme:
        readme = readme.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{render(results, args.wall_s)}\n{END}{tail}")


if __name__ == "__main__":
    main()
