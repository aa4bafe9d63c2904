"""Tuning campaigns: grids of configurations x folds and Optuna studies, on SLURM or locally, through submitit.

``python -m isles_diffseg.campaign grid|optuna|report ...`` (see :mod:`isles_diffseg.campaign.__main__`).
"""
