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
# This light chapter runs when the book is built. It lists every profile and what differs between
# them, straight from `moero/book/profiles.yaml` (read by `moero.book.profiles`), so the tables cannot
# drift from the code. The training runs of chapters 6-8 share one block per profile (`results.*`);
# nested settings appear as dotted names, e.g. `results.train.preset`. Override any of them with
# `-p name value` (see {doc}`../book/reproduction`); every setting of a profile is in the YAML file.

# %% tags=["hide-input"]
import json

from IPython.display import display

from moero.book.profiles import PROFILES, profile_differences
from moero.eval.tables import Table

# %% tags=["hide-input"]
display(Table([{"profile": p.name, "description": p.description, "dataset": p.dataset, "device": p.device}
               for p in PROFILES.values()], caption="The profiles", name="tab-profiles-list"))

# %% [markdown]
# ## What differs between the profiles
#
# One row per setting whose value is not the same in every profile; settings shared by all profiles
# are left out.

# %% tags=["hide-input"]
rows = [{k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()} for row in profile_differences()]
display(Table(rows, caption="Settings that differ between the profiles (notebook.parameter; "
                            "results.*: the runs chapters 06-08 share)", name="tab-profiles-differences"))
