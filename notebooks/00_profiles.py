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
#     light: true
# ---

# %% [markdown]
# # The run profiles
#
# This light chapter runs when the book is built. It lists every profile and the parameters each
# notebook receives under it, straight from `moero.profiles`, so the table cannot drift from the
# code.

# %%
from moero.book.profiles import PROFILES
from moero.eval.tables import Table

rows = [
    {
        "profile": p.name,
        "description": p.description,
        "dataset": p.dataset,
        "device": p.device,
    }
    for p in PROFILES.values()
]
Table(rows, caption="Profiles")

# %% [markdown]
# Parameters per notebook, for each profile:

# %%
rows = [
    {"notebook": nb, **{name: str(p.notebooks[nb]) for name, p in PROFILES.items()}}
    for nb in PROFILES["cpu"].notebooks
]
Table(rows, caption="Notebook parameters by profile")
