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
# This light chapter runs when the book is built. It lists every profile and, for each, the
# parameters every notebook receives under it, straight from `moero.book.profiles`, so the tables
# cannot drift from the code. Nested settings (the training configuration shared by chapters 6-8)
# appear as dotted names, e.g. `train.preset`. Override any of them with `-p name value` (see
# {doc}`../book/reproduction`).

# %% tags=["hide-input"]
import json

from IPython.display import display

from moero.book.profiles import PROFILES
from moero.eval.tables import Table


def flat(params: dict, prefix: str = "") -> dict:
    """Nested parameter dicts as dotted names (``train.preset``)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


# %% tags=["hide-input"]
display(Table([{"profile": p.name, "description": p.description, "dataset": p.dataset, "device": p.device}
               for p in PROFILES.values()], caption="The profiles"))

# %% [markdown]
# ## Parameters of every notebook, one table per profile

# %% tags=["hide-input"]
for p in PROFILES.values():
    rows = [{"notebook": nb, "parameter": name, "value": value}
            for nb, params in p.notebooks.items() for name, value in flat(params).items()]
    display(Table(rows, caption=f"Profile {p.name!r}: {p.description}"))
