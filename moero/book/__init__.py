"""Book layer: run profiles, results with provenance, the experiments of chapters 6-9, the paper's
reported numbers, the papermill runner and the Sphinx extensions. Import from the modules.
"""
