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
#   moero:
#     needs: [06_training, 07_augmentation_ablation, 08_model_ablation, 09_efficiency]
# ---

# %% [markdown]
# # The paper's claims at a glance
#
# Every claim the paper {cite}`li2025branch` makes about its experiments, set against what this book
# measures: the paper's figure, ours with its interval (95 %, or the level the chapter's verdict uses where that
# is the only one it reports), and the verdict of the chapter that judges it.
# A verdict is one of four: **holds** and **contradicts** only when the interval, Holm-corrected over the
# chapter's family (and split over the four results chapters), excludes 0 with the paper's sign or against
# it (a parity claim: when the whole interval lies within the equivalence margin, or beyond it);
# **inconclusive at this scale** when it does not; **not testable at this scale** with the reason (too few
# seeds, routing not active, a run the profile does not train, a curve that still improves). The rules
# are in {doc}`../book/conventions`; each row's chapter shows the comparison in full.
#
# The table is computed from the verdict tables of {doc}`06_training`, {doc}`07_augmentation_ablation`,
# {doc}`08_model_ablation` and {doc}`09_efficiency` (this page runs after them) and written to
# `claims.csv` in its results folder.

# %% tags=["parameters"]
profile = "cpu"      # smoke | cpu | gpu | paper
data_root = None     # a CMRxRecon2025 tree; None -> the profile's embedded synthetic data
results_dir = None   # None -> _build/results/<profile>/<notebook>
params = {}          # overrides of this notebook's profile parameters

# %% tags=["hide-input"]
from collections import Counter

from IPython.display import display

from moero.book import paper, show
from moero.book.run import start_run
from moero.eval.tables import Table

run = start_run("claims", profile=profile, params=params, results_dir=results_dir, data_root=data_root)
chapters = sorted({c.chapter for c in paper.CLAIMS})
# the verdicts each chapter shows: the committed results of a heavier profile when they exist, else this run's
sources = {ch: show.results_source(ch, run, other=True) for ch in chapters}
verdicts = {ch: show.read_table(src.folder, "verdicts") for ch, src in sources.items()}

# %% tags=["hide-input"]
# chapter 9 reports its timing ratios with the bootstrap interval at the chapter's family level only (the one its
# verdicts use); every other row's interval is the 95 % one
LEVELS = (f"95 %; the speed ratio: the {1 - show.CHAPTER_ALPHA:.2%} bootstrap interval chapter 9 judges it by; "
          "memory: exact, no interval")
rows, shown = [], []
for claim in paper.CLAIMS:
    found = [r for r in verdicts[claim.chapter] if r.get("claim") == claim.key]
    # every claim of the paper gets exactly one verdict in its chapter: a missing one fails the build
    assert len(found) == 1, f"chapter {claim.chapter} has {len(found)} verdict rows for claim {claim.key!r}"
    r = found[0]
    ours, lo, hi = show.number(r["ours"]), show.number(r["ci_low"]), show.number(r["ci_high"])
    rows.append({"claim": claim.key, "chapter": claim.chapter, "paper": claim.paper, "ours": ours, "ci_low": lo,
                 "ci_high": hi, "seeds": r.get("seeds", ""), "verdict": r["verdict"], "statement": claim.statement,
                 "profile": sources[claim.chapter].kind})
    shown.append({"claim": claim.statement, "paper": claim.paper, "ours [interval]": show.effect_text(r),
                  "seeds": r.get("seeds") or "-", "verdict": r["verdict"],
                  "chapter": int(claim.chapter[:2]), "profile": sources[claim.chapter].kind})
run.table(rows, "claims", columns=["claim", "chapter", "paper", "ours", "ci_low", "ci_high", "seeds", "verdict",
                                   "statement", "profile"],
          caption=f"Every claim of the paper: its figure, ours with its interval ({LEVELS}), the verdict and the chapter "
                  "that judges it")
tally = Counter(r["verdict"].split(" (")[0] for r in rows)
display(show.admonition(
    f"{len(rows)} claims: " + ", ".join(f"{n} {v}" for v, n in sorted(tally.items(), key=lambda t: -t[1]))
    + ". Each row is judged on the results its chapter shows, from the profile named in the row: "
    + "; ".join(f"{n} row(s) from the {p} profile" + (" (committed results, book/results/" + p + ")"
                                                      if published else " (this build's run)")
                for (p, published), n in Counter((sources[c.chapter].kind, sources[c.chapter].published)
                                                 for c in paper.CLAIMS).items())
    + ". Each chapter's Setting box, or its published results' scale, gives the model, data, budgets in epochs "
      "and seeds; a verdict here is a verdict at that scale, not on the paper's. Effects are differences in SSIM "
      "(speed and memory: ratios to the baseline minus 1).",
    title="Verdicts", kind="note"))
display(Table(shown, caption=f"The paper's claims: its figure, ours with its interval ({LEVELS}), the verdict, the chapter "
                             "that judges it and the profile whose results it shows (claims.csv holds the same with "
                             "full precision)", name="tab-claims"))

# %% [markdown]
# Where each claim is judged: {doc}`06_training` (plateau, specialisation), {doc}`07_augmentation_ablation`
# (augmentation and its ratio), {doc}`08_model_ablation` (VQ-Prompt, Moero and its later gain) and
# {doc}`09_efficiency` (speed and memory).

# %% tags=["remove-cell"]
run.finish()
