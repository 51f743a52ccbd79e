# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training efficiency: experts, DDP and the stages of a step
#
# The paper's {cite}`li2025branch` limit for Moero is wall-clock time, not memory: with 2 and 4 experts it trained at
# 0.98 and 0.86 iterations/s against the baseline's 1.27 (8x A100), while GPU memory grew only from
# 35.6 GB to 36.8 and 39.9 GB. The authors attribute the slowdown to DDP's
# `find_unused_parameters=True`, which walks the autograd graph every step to find the experts that
# did not run, and to gradient synchronisation of experts no sample used (the classic cost of sparse
# mixtures of experts {cite}`shazeer2017moe,fedus2022switch`).
#
# Our Moero keeps expert parameters out of DDP's reducer and synchronises them, the usage flags, the
# routing statistics and the VQ statistics in **one** all-reduce per step (`Moero.after_backward`).
# This chapter measures, with `moero.train.efficiency`, on the same inputs and in interleaved rounds (so
# that load drift hits all models alike):
#
# 1. iterations/s and peak memory of one training step against the number of experts $K$;
# 2. the same with 2-process DDP: ours against `find_unused_parameters=True`;
# 3. the time of each stage of one training step: data, augmentation, forward, backward,
#    synchronisation, optimiser;
# 4. Moero at batch > 1 with mixed routes: what is lost batching and what is overhead;
# 5. compiled (inductor), channels-last and bf16 CPU training against eager fp32.
#
# Every speed is a ratio against a reference timed in the same run, as the median over interleaved
# rounds with a bootstrap interval at the chapter's family level; a verdict counts only what the
# interval shows. Peak memory is the allocator's: the largest running sum of the individual CPU
# allocations and frees of one step (`torch.cuda.max_memory_allocated` on GPU). An earlier version
# summed the profiler's nested op events and counted the same bytes up to ten times over.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from moero.book import paper, runspec, show
from moero.book.run import start_run
from moero.models.registry import parse_model_name
from moero.train import efficiency

run = start_run("09_efficiency", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params
torch.set_num_threads(P["threads"])
PAIRS = int(P.get("pairs", 7 if P["rounds"] > 1 else 1))  # interleaved pairs of sections 4-5 (>= 7 for a verdict)
LEVEL = 1 - show.CHAPTER_ALPHA  # intervals at the chapter's family level, as its verdicts use them
LOAD = efficiency.machine_note()
counts = {n: efficiency.build_model(n.split(":")[0], P["preset"], P["cascades"]) for n in P["names"]}
counts = {n: sum(p.numel() for p in m.parameters() if p.requires_grad) for n, m in counts.items()}

# %% [markdown]
# ## Published results
#
# When the results of a heavier profile are committed with the book (`book/results/<profile>/`), they are
# this chapter's main results: the box names the profile, commit, date and scale that produced them, and
# a warning follows when this chapter's code or the package's science layers have changed since. Their
# verdicts follow the rules of the whole book ({doc}`../book/conventions`).

# %% tags=["hide-input"]
display(show.show_published("09_efficiency", run, ['single_process', 'experts', 'ddp_compare', 'verdicts']))

# %% [markdown]
# ## This build's run
#
# Everything below is computed by this build's own run, at the scale its Setting box states. When
# published results are shown above, this run is the check that the current code still points the same
# way: the last table of the chapter sets its verdicts beside the published ones.

# %% tags=["hide-input"]
display(show.admonition(run.statement("setting",
    f"Profile {run.profile.name!r} on {run.device} with {P['threads']} threads. Model preset {P['preset']!r} with "
    f"{P['cascades']} cascades (trainable parameters: {', '.join(f'{n} {c:,}' for n, c in counts.items())}); phantom "
    f"{P['shape'][0]}x{P['shape'][1]}; {P['rounds']} timed rounds after {P['warmup']} warm-up steps per model, "
    f"DDP with {P['ddp_world']} processes; no training and no seeds: these are timings of single steps, each "
    f"ratio against a baseline measured in the same run (median and bootstrap interval over the rounds; "
    f"{PAIRS} interleaved pairs for sections 4-5). Load average (1 min) at the start: {LOAD['load_avg_1min']} on "
    f"{LOAD['cpus']} CPUs. Peak memory: the allocator's."), title="Setting"))

# %% [markdown]
# ### Iterations/s and peak memory against the number of experts (one process)

# %%
single = efficiency.throughput(P["names"], P["preset"], P["shape"], P["cascades"], rounds=P["rounds"],
                               warmup=P["warmup"], device=run.device, confidence=LEVEL)
for row in single:
    key = runspec.paper_model(row["model"])  # moero-CxK here stands for the paper's moero-12xK
    row["paper_speed_vs_baseline"] = paper.SPEED[key] / paper.SPEED["promptmr"] if key in paper.SPEED else None
    row["paper_memory_vs_baseline"] = (sum(paper.MEMORY_GB[key]) / sum(paper.MEMORY_GB["promptmr"])
                                       if key in paper.MEMORY_GB else None)
run.table(single, "single_process", caption="One process: iterations/s and peak step memory per model")
display(show.show_result(run.results_dir, "single_process"))

fig, (ax_s, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
x = np.arange(len(single))
ax_s.bar(x - 0.2, [r["speed_round_median"] for r in single], 0.4, label="ours (this machine)",
         yerr=[[r["speed_round_median"] - r["speed_low"] for r in single],
               [r["speed_high"] - r["speed_round_median"] for r in single]], capsize=3)
ax_s.bar(x + 0.2, [r["paper_speed_vs_baseline"] or np.nan for r in single], 0.4, label="paper (8x A100, DDP)")
ax_m.bar(x - 0.2, [r["memory_vs_baseline"] for r in single], 0.4, label="ours")
ax_m.bar(x + 0.2, [r["paper_memory_vs_baseline"] or np.nan for r in single], 0.4, label="paper")
for ax, title in ((ax_s, "iterations/s relative to the baseline"), (ax_m, "peak memory relative to the baseline")):
    ax.set_xticks(x, [r["model"] for r in single])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(title=title, ylabel="ratio")
    ax.legend(fontsize=9)
fig.tight_layout()
display(run.figure(fig, "experts", caption="Speed and memory relative to the baseline against the number of experts"))

# %% [markdown]
# ### DDP: our synchronisation against `find_unused_parameters`
#
# Two processes (gloo on CPU, NCCL when there are enough GPUs), each seeing a differently shifted
# phantom so that the ranks may route to different experts.

# %%
ddp = efficiency.ddp_throughput(P["ddp_names"], world=P["ddp_world"], preset=P["preset"], shape=P["shape"],
                                cascades=P["cascades"], rounds=P["ddp_rounds"], warmup=P["warmup"],
                                threads=P["threads"]) if P["ddp_names"] else []
if ddp:
    run.table(ddp, "ddp", caption=f"DDP x{P['ddp_world']}: iterations/s, ours vs find_unused_parameters=True")
    display(show.show_result(run.results_dir, "ddp"))
else:
    display(show.admonition("No DDP model in this profile's ddp_names: the section is not measured.", title="DDP"))
by_name = {r["model"]: r for r in ddp}
ddp_compare = []
for name in [n for n in P["ddp_names"] if n.startswith("moero-") and not n.endswith(efficiency.FIND_UNUSED)]:
    ours, theirs = by_name.get(name), by_name.get(name + efficiency.FIND_UNUSED)
    k = runspec.paper_model(name).split("x")[1]
    if ours and theirs:
        ddp_compare.append({"model": name, "ours_it_per_s": ours["it_per_s"], "find_unused_it_per_s": theirs["it_per_s"],
                            "ours_vs_find_unused": ours["it_per_s"] / theirs["it_per_s"],
                            "ours_vs_vq_prompt": ours["speed_vs_baseline"],
                            "find_unused_vs_vq_prompt": theirs["speed_vs_baseline"],
                            "paper_vs_vq_prompt": paper.SPEED[f"moero-12x{k}"] / paper.SPEED["vq-prompt"]})
if ddp_compare:
    display(run.table(ddp_compare, "ddp_compare", caption="Moero under DDP: our synchronisation against "
                      "find_unused_parameters=True, and speed relative to VQ-Prompt"))

# %% [markdown]
# ### Where the time of one training step goes
#
# Real examples of the profile's dataset (crops of `stage_shape`; native size when empty), DualSpace
# augmentation (image and k-space) at ratio 1, one process. The synchronisation stage is each model's
# own per-step pass (VQ statistics; Moero: expert usage and routing) without a collective.

# %%
from moero.data.dataset import SliceDataset  # noqa: E402
from moero.physics.masks import MaskSampler  # noqa: E402
from moero.train.trainer import make_augment  # noqa: E402

root = run.dataset_root()
stage_rows = []
for name in P["names"][:3]:  # promptmr, vq-prompt and the first Moero
    model = efficiency.build_model(name, P["preset"], P["cascades"], run.device)
    ds = SliceDataset(root, split="train", frames=int(model.config.frames), mask_sampler=MaskSampler(),
                      shape=tuple(P["stage_shape"]) if P["stage_shape"] else None)
    steps = efficiency.stage_times(model, ds, make_augment("dual", 1.0), steps=P["stage_steps"], device=run.device)
    mean = {s: float(np.mean([r[s] for r in steps])) for s in (*efficiency.STAGES, "total")}
    stage_rows.append({"model": name, **mean})
run.table(stage_rows, "stages", caption="Mean seconds per stage of one training step",
          units={s: "s" for s in (*efficiency.STAGES, "total")})
fig, ax = plt.subplots(figsize=(7, 3.8))
left = np.zeros(len(stage_rows))
for stage in efficiency.STAGES:
    vals = np.array([r[stage] for r in stage_rows])
    ax.barh([r["model"] for r in stage_rows], vals, left=left, label=stage)
    left += vals
ax.set(xlabel="seconds per step", title="Time per stage of one training step")
ax.legend(fontsize=9, ncols=3)
fig.tight_layout()
display(run.figure(fig, "stages", caption="Seconds per stage of one training step, per model"))

# %% tags=["hide-input"]
biggest = {r["model"]: max(efficiency.STAGES, key=lambda s: r[s]) for r in stage_rows}
moeros = [r for r in single if r["model"].startswith("moero-")]
verdicts = []
for r in moeros:
    biggest_k = r is max(moeros, key=lambda m: parse_model_name(m["model"]).num_experts)
    speed = efficiency.Ratio(r["speed_round_median"], r["speed_low"], r["speed_high"])
    few = f"{P['rounds']} timed round(s); a verdict needs 5" if P["rounds"] < 5 else None
    verdicts.append({"comparison": f"{r['model']}: iterations/s relative to the baseline, minus 1",
                     "verdict": show.measured_verdict(speed.median - 1, (speed.low - 1, speed.high - 1),
                                                      r["paper_speed_vs_baseline"] - 1, reason=few),
                     "ours": speed.median - 1, "ci_low": speed.low - 1, "ci_high": speed.high - 1,
                     "paper": f"{r['paper_speed_vs_baseline'] - 1:+.3f}", "rounds": P["rounds"],
                     "claim": "speed" if biggest_k else ""})
    # the allocator counts bytes exactly: the same step gives the same figure, so the interval is the point
    memory = r["memory_vs_baseline"]
    verdicts.append({"comparison": f"{r['model']}: peak step memory relative to the baseline, minus 1",
                     "verdict": show.measured_verdict(memory - 1, (memory - 1, memory - 1),
                                                      r["paper_memory_vs_baseline"] - 1),
                     "ours": memory - 1, "ci_low": memory - 1, "ci_high": memory - 1,
                     "paper": f"{r['paper_memory_vs_baseline'] - 1:+.3f}", "rounds": P["rounds"],
                     "claim": "memory" if biggest_k else ""})
display(run.table(verdicts, "verdicts", caption=f"Speed and memory of Moero against the baseline (one process): ours "
                  f"(median and {LEVEL:.2%} bootstrap interval over the rounds; memory exact) beside the paper's "
                  "(8x A100, DDP)"))
m2 = moeros[0]
speed = efficiency.Ratio(m2["speed_round_median"], m2["speed_low"], m2["speed_high"])
memory = m2["memory_vs_baseline"]
speed_verdict, memory_verdict = verdicts[0]["verdict"], verdicts[1]["verdict"]
display(show.reading(run,
    f"Single process, {m2['model']} runs at {speed.text()} (median [{LEVEL:.2%} interval] over {P['rounds']} "
    f"rounds) the baseline's iterations/s (paper, 8x A100 under DDP: {m2['paper_speed_vs_baseline']:.2f}x): the "
    f"paper's 'slower with experts' {speed_verdict}. Its allocator peak step memory is {memory:.3f}x the "
    f"baseline's (paper: {m2['paper_memory_vs_baseline']:.3f}x); the allocator counts bytes exactly, so the figure "
    f"has no sampling error, and the paper's 'more memory with experts' {memory_verdict}. Sizes, device "
    f"({run.device}) and process count differ from the paper's.", title="Verdict"))

# %% [markdown]
# ### Moero at batch > 1: lost batching and overhead
#
# Routed per sample, a batch with mixed routes runs each expert once on its group, so at batch $B$ with
# $K$ experts each expert sees $B/K$ samples. Part of the cost is **lost batching**, which no
# implementation avoids: VQ-PromptMR+ run $K$ times on $B/K$ samples against once on $B$. The rest is
# the **overhead** of splitting inputs and merging outputs, measured as Moero with mixed routes over
# Moero with every sample sent to one expert, divided by the lost batching (1: no overhead). `dispatch`
# puts each batched input in expert order once and splits it into views (no copy when the routes are
# already sorted), and puts the outputs back in batch order once. Routes are forced to round robin
# (`0, 1, 0, 1`, the worst case), so the numbers do not depend on the routing fit.

# %%
batches = P.get("dispatch_batches", [2, 4] if PAIRS > 1 else [2])
batch_rows = efficiency.dispatch_batches(P["preset"], P["cascades"], P["shape"], batches, experts=2, rounds=PAIRS,
                                         warmup=P["warmup"], confidence=LEVEL)
run.table(batch_rows, "dispatch_batches", caption="Moero with mixed routes at batch > 1 against VQ-PromptMR+ at "
          "the same batch: speed ratios (median and bootstrap interval over interleaved rounds)")
display(show.show_result(run.results_dir, "dispatch_batches"))
lines = []
for b in batches:
    by_what = {r["what"]: efficiency.Ratio(r["ratio"], r["ratio_low"], r["ratio_high"]) for r in batch_rows
               if r["batch"] == b}
    mixed, lost, over = (by_what["moero mixed: speed vs vq-prompt"], by_what["lost batching"],
                         by_what["dispatch overhead"])
    where = ("no overhead beyond lost batching is measurable (the interval holds 1)" if over.low <= 1 <= over.high
             else "a measurable overhead beyond lost batching" if over.low > 1
             else "less than lost batching predicts (that estimate also splits the coil-map network, which Moero "
                  "runs on the whole batch)")
    lines.append(f"batch {b}: Moero runs at {mixed.text()} of VQ-PromptMR+'s speed; lost batching alone gives "
                 f"{lost.text()}; dispatch overhead factor {over.text()}: {where}.")
display(show.reading(run, " ".join(lines), title="Batch > 1: where the time goes"))

# %% [markdown]
# ### Faster CPU training: compiled, channels-last and bf16 against eager fp32
#
# VQ-PromptMR+ of the profile's preset, one training step and one evaluation forward, each variant
# against eager fp32 with the same weights on the same input, in interleaved pairs:
# `torch.compile` (inductor), channels-last convolution weights, and bf16 autocast
# (`moero.train.acceleration`). A variant is worth adopting by default when the lower end of its
# speed-up interval clears 1.15 (issue 30) and its output equals eager's within `torch.testing.assert_close`'s
# default tolerance (the tests'); `first call s` includes the compilation. Compiling a training step
# (forward and backward graphs) takes minutes of C++ builds on a 2-core machine, so the chapter compiles
# only the evaluation forward unless `accel_train_variants` lists `compile`;
# `python -m benchmarks bench_accel` measures both phases of every variant.

# %%
from moero.train import acceleration  # noqa: E402

ADOPT = 1.15  # issue 30: adopt by default what gives at least 1.15x with equal outputs
eval_variants = P.get("accel_variants", list(acceleration.VARIANTS) if PAIRS > 1 else ["channels_last", "bf16"])
train_variants = P.get("accel_train_variants", ["channels_last", "bf16"])
accel_rows = []
for accel_preset in P.get("accel_presets", [P["preset"]]):
    for phase, variants in (("train", train_variants), ("eval", eval_variants)):
        if variants:
            accel_rows += acceleration.measure("vq-prompt", accel_preset, P["shape"], variants, pairs=PAIRS,
                                               warmup=P["warmup"], cascades=P["cascades"], confidence=LEVEL,
                                               phases=[phase])
run.table(accel_rows, "acceleration", caption="Speed-up over eager fp32 (eager time / variant time: median and "
          "bootstrap interval over interleaved pairs) and the output's relative error")
display(show.show_result(run.results_dir, "acceleration"))
fig, ax = plt.subplots(figsize=(7, 0.45 * len(accel_rows) + 1.2))
labels = [f"{r['preset']} {r['phase']} {r['variant']}" for r in accel_rows]
med = np.array([r["speedup"] for r in accel_rows])
err = np.array([[r["speedup"] - r["speedup_low"] for r in accel_rows], [r["speedup_high"] - r["speedup"] for r in accel_rows]])
ax.barh(labels, med, xerr=err, capsize=3)
ax.axvline(1.0, color="k", lw=0.8)
ax.axvline(ADOPT, color="tab:red", lw=0.8, ls="--", label=f"adoption bar {ADOPT}")
ax.set(xlabel="speed-up over eager fp32", title="CPU acceleration, VQ-PromptMR+")
ax.legend(fontsize=9)
fig.tight_layout()
display(run.figure(fig, "acceleration", caption=f"Speed-up over eager fp32 with {LEVEL:.2%} intervals"))
said = []
for r in accel_rows:
    ratio = acceleration.speedup(r)
    adopt = ratio.clears(ADOPT) and r["outputs_equal"]
    why = ("adopt" if adopt else "outputs differ beyond the tests' tolerance" if not r["outputs_equal"]
           else "faster, but the interval does not clear the bar" if ratio.low > 1
           else "no speed-up the interval can show" if ratio.high >= 1 else "slower")
    said.append(f"{r['preset']} {r['phase']} {r['variant']}: {ratio.text()} ({why})")
display(show.reading(run, "; ".join(said) + ".", title="Verdict: acceleration"))

# %%
src = show.results_source("09_efficiency", run)
display(show.sign_check(src, run))

# %% tags=["remove-cell"]
run.finish()
