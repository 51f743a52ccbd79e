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
# This chapter measures, with `moero.efficiency`, on the same inputs and in interleaved rounds (so
# that load drift hits all models alike):
#
# 1. iterations/s and peak memory of one training step against the number of experts $K$;
# 2. the same with 2-process DDP: ours against `find_unused_parameters=True`;
# 3. the time of each stage of one training step: data, augmentation, forward, backward,
#    synchronisation, optimiser.

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

from moero.book import experiments as E
from moero.book import paper
from moero.book.run import start_run
from moero.train import efficiency

run = start_run("09_efficiency", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
P = run.params
torch.set_num_threads(P["threads"])
counts = {n: efficiency.build_model(n.split(":")[0], P["preset"], P["cascades"]) for n in P["names"]}
counts = {n: sum(p.numel() for p in m.parameters() if p.requires_grad) for n, m in counts.items()}
display(E.admonition(
    f"Profile {run.profile.name!r} on {run.device} with {P['threads']} threads. Model preset {P['preset']!r} with "
    f"{P['cascades']} cascades (trainable parameters: {', '.join(f'{n} {c:,}' for n, c in counts.items())}); phantom "
    f"{P['shape'][0]}x{P['shape'][1]}; {P['rounds']} timed rounds after {P['warmup']} warm-up steps per model, "
    f"DDP with {P['ddp_world']} processes; no training and no seeds: these are timings of single steps, each "
    "ratio against a baseline measured in the same run.", title="Setting"))

# %% [markdown]
# ## Iterations/s and peak memory against the number of experts (one process)

# %%
single = efficiency.throughput(P["names"], P["preset"], P["shape"], P["cascades"], rounds=P["rounds"],
                               warmup=P["warmup"], device=run.device)
for row in single:
    key = E.paper_model(row["model"])  # moero-CxK here stands for the paper's moero-12xK
    row["paper_speed_vs_baseline"] = paper.SPEED[key] / paper.SPEED["promptmr"] if key in paper.SPEED else None
    row["paper_memory_vs_baseline"] = (sum(paper.MEMORY_GB[key]) / sum(paper.MEMORY_GB["promptmr"])
                                       if key in paper.MEMORY_GB else None)
run.table(single, "single_process", caption="One process: iterations/s and peak step memory per model")
display(E.show_result(run.results_dir, "single_process"))

fig, (ax_s, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
x = np.arange(len(single))
ax_s.bar(x - 0.2, [r["speed_vs_baseline"] for r in single], 0.4, label="ours (this machine)")
ax_s.bar(x + 0.2, [r["paper_speed_vs_baseline"] or np.nan for r in single], 0.4, label="paper (8x A100, DDP)")
ax_m.bar(x - 0.2, [r["memory_vs_baseline"] for r in single], 0.4, label="ours")
ax_m.bar(x + 0.2, [r["paper_memory_vs_baseline"] or np.nan for r in single], 0.4, label="paper")
for ax, title in ((ax_s, "iterations/s relative to the baseline"), (ax_m, "peak memory relative to the baseline")):
    ax.set_xticks(x, [r["model"] for r in single])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(title=title, ylabel="ratio")
    ax.legend(fontsize=9)
fig.tight_layout()
display(E.publish_figure(run, fig, "experts", caption="Speed and memory relative to the baseline against the number of experts"))

# %% [markdown]
# ## DDP: our synchronisation against `find_unused_parameters`
#
# Two processes (gloo on CPU, NCCL when there are enough GPUs), each seeing a differently shifted
# phantom so that the ranks may route to different experts.

# %%
ddp = efficiency.ddp_throughput(P["ddp_names"], world=P["ddp_world"], preset=P["preset"], shape=P["shape"],
                                cascades=P["cascades"], rounds=P["ddp_rounds"], warmup=P["warmup"],
                                threads=P["threads"])
run.table(ddp, "ddp", caption=f"DDP x{P['ddp_world']}: iterations/s, ours vs find_unused_parameters=True")
display(E.show_result(run.results_dir, "ddp"))
by_name = {r["model"]: r for r in ddp}
ddp_compare = []
for name in [n for n in P["ddp_names"] if n.startswith("moero-") and not n.endswith(efficiency.FIND_UNUSED)]:
    ours, theirs = by_name.get(name), by_name.get(name + efficiency.FIND_UNUSED)
    k = E.paper_model(name).split("x")[1]
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
# ## Where the time of one training step goes
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
display(E.publish_figure(run, fig, "stages", caption="Seconds per stage of one training step, per model"))

# %%
biggest = {r["model"]: max(efficiency.STAGES, key=lambda s: r[s]) for r in stage_rows}
m2 = next(r for r in single if r["model"].startswith("moero-"))
display(E.admonition("Largest stage per model: " + ", ".join(f"{m}: {s}" for m, s in biggest.items()) + ".",
                     title="Where the time goes"))
display(E.admonition(f"Single process, {m2['model']} runs at {m2['speed_vs_baseline']:.2f}x the baseline's iterations/s "
      f"(paper, 8x A100 under DDP: {m2['paper_speed_vs_baseline']:.2f}x) with {m2['memory_vs_baseline']:.2f}x its "
      f"peak step memory (paper: {m2['paper_memory_vs_baseline']:.2f}x). The paper's trend (memory nearly flat, "
      f"speed lower) {'holds' if m2['memory_vs_baseline'] < 1.5 else 'does not hold'} for memory here; sizes, "
      f"device ({run.device}) and process count differ from the paper's.", title="Verdict"))

# %%
src = E.results_source("09_efficiency", run)
display(E.show_source(src, run, "single_process"))

# %% tags=["remove-cell"]
run.finish()
