"""Patient-level folds: disjoint, complete, balanced, stratified, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from isles_diffseg.data.folds import assign_folds, assign_roles


def _cases(n=23, seed=1):
    rng = np.random.default_rng(seed)
    volumes = rng.lognormal(3, 1, n)
    volumes[:3] = 0  # lesion-free cases
    return [f"sub-stroke{i:04d}" for i in range(1, n + 1)], list(volumes)


def test_every_patient_is_in_exactly_one_fold_and_sizes_are_balanced():
    ids, vols = _cases()
    folds = assign_folds(ids, vols, n_folds=5, seed=0)
    assert sorted(folds["case_id"]) == sorted(ids) and folds["case_id"].is_unique
    sizes = folds["fold"].value_counts()
    assert set(folds["fold"]) == set(range(5)) and sizes.max() - sizes.min() <= 1


def test_lesion_volume_strata_are_spread_over_folds():
    ids, vols = _cases(40)
    folds = assign_folds(ids, vols, n_folds=5, seed=3, n_strata=3)
    per_fold = folds.groupby("fold")["stratum"].value_counts().unstack(fill_value=0)
    assert (per_fold.max() - per_fold.min()).max() <= 1
    assert (folds.loc[folds["lesion_volume_ml"] == 0, "stratum"] == 0).all()


def test_folds_depend_on_the_seed_only_not_on_input_order():
    ids, vols = _cases()
    a = assign_folds(ids, vols, seed=7)
    b = assign_folds(ids[::-1], vols[::-1], seed=7)
    c = assign_folds(ids, vols, seed=8)
    assert a.equals(b)
    assert not a["fold"].equals(c["fold"])


def test_roles_hold_out_the_test_fold_and_validate_on_the_next():
    ids, vols = _cases()
    roles = assign_roles(assign_folds(ids, vols, n_folds=5), test_fold=4)
    assert set(roles.loc[roles["fold"] == 4, "role"]) == {"test"}
    assert set(roles.loc[roles["fold"] == 0, "role"]) == {"val"}
    assert set(roles.loc[roles["fold"].isin([1, 2, 3]), "role"]) == {"train"}
    with pytest.raises(ValueError, match="outside the 5 folds"):
        assign_roles(roles, test_fold=5)
    with pytest.raises(ValueError, match="other than the test fold"):
        assign_roles(roles, test_fold=1, val_fold=1)


def test_duplicates_and_too_few_cases_are_refused():
    with pytest.raises(ValueError, match="unique"):
        assign_folds(["a", "a", "b"], [1, 2, 3], n_folds=2)
    with pytest.raises(ValueError, match="cannot fill"):
        assign_folds(["a", "b"], [1, 2], n_folds=5)
