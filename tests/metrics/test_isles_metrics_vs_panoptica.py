"""panoptica, the library of the ISLES'24 evaluation (ezequieldlrosa/isles24 utils/eval_utils.py), as an oracle for
our lesion matching: 3D connected components, one-to-one matching at IoU >= 0.2 (``NaiveThresholdMatching``),
Dice = ``global_bin_dsc``, lesion F1 = ``rq``, count difference from the instance counts, both-empty = 1.

panoptica is not a project dependency (its pins would downgrade numpy and pandas here), so this test runs where
it is installed: e.g. a scratch environment with ``pip install panoptica scipy nibabel pytest`` and
``PYTHONPATH=src pytest tests/metrics/test_isles_metrics_vs_panoptica.py``. On 2026-12-01 (panoptica 2.1.7)
all 60 pairs agreed exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from isles_diffseg.metrics.isles import isles24_case_metrics

panoptica = pytest.importorskip("panoptica")


def random_pairs(n: int = 60, seed: int = 0):
    """Blobby ground truths and predictions that are shifted, dilated, fragmented, empty or spurious."""
    rng = np.random.default_rng(seed)
    shape = (48, 56, 20)
    for case in range(n):
        field = ndimage.gaussian_filter(rng.random(shape), rng.uniform(1, 3))
        gt = field > np.quantile(field, rng.uniform(0.9, 0.995))
        pred = np.roll(gt, rng.integers(-3, 4), axis=int(rng.integers(0, 3)))
        if rng.random() < 0.5:
            pred = ndimage.binary_dilation(pred, iterations=int(rng.integers(1, 3)))
        spurious = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.62
        pred = pred | (spurious & (rng.random() < 0.5))
        if case % 15 == 0:
            pred[:] = False
        if case % 20 == 1:
            gt[:] = False
        yield case, pred.astype(np.uint8), gt.astype(np.uint8)


def test_dice_lesion_f1_and_count_difference_equal_panoptica_s():
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )

    evaluator = Panoptica_Evaluator(expected_input=InputType.SEMANTIC,
                                    instance_approximator=ConnectedComponentsInstanceApproximator(),
                                    instance_matcher=NaiveThresholdMatching(matching_threshold=0.2))
    for case, pred, gt in random_pairs():
        ours = isles24_case_metrics(pred, gt, (1.0, 1.0, 1.0))
        result = evaluator.evaluate(pred, gt, verbose=False)["ungrouped"]
        both_empty = not gt.any() and not pred.any()
        assert ours["dice"] == pytest.approx(1.0 if both_empty else result.global_bin_dsc, abs=1e-12), case
        assert ours["lesion_f1"] == pytest.approx(1.0 if both_empty else result.rq, abs=1e-12), case
        assert ours["abs_lesion_count_diff"] == abs(result.n_ref_instances - result.n_pred_instances), case
