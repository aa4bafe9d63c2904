"""A case's prediction does not depend on how its samples were batched, nor with which other cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sampling import BRAIN, model_fixture, sampling, store_fixture  # noqa: F401 (fixtures)

from isles_diffseg.inference.background import in_background
from isles_diffseg.inference.case_prediction import predict_case, predict_cases

CPU = torch.device("cpu")
CASES = list(BRAIN)
# float32 convolutions of another batch size may round differently (~1e-7, grown to ~3e-5 by the noisy steps
# of eta > 0 and DDPM); another noise draw changes a probability by tenths, so 1e-4 separates "the same
# samples" from "other samples". With the fast path every call has one shape: bit-identical (test_compiled_sampling)
SAME = {"rtol": 0, "atol": 1e-4}


def _predict(model, store, case_ids, batch_size, sampler=("ddim10", {}), members=3, seed=7, fusion="mean"):
    diffusion, config = sampling(sampler[0], **sampler[1])
    return {p.case_id: p for p in predict_cases(model, store, case_ids, kind="diffusion", diffusion=diffusion,
                                                  sampler=config, device=CPU, members=members, batch_size=batch_size,
                                                  seed=seed, fusion=fusion)}


@pytest.mark.parametrize("sampler", [("ddim10", {}), ("ddim10", {"eta": 0.5}), ("ddpm1000", {})],
                         ids=["ddim", "ddim_eta0.5", "ddpm"])
def test_batch_size_3_and_64_give_the_same_probabilities(model, store, sampler):
    small, large = _predict(model, store, CASES, 3, sampler), _predict(model, store, CASES, 64, sampler)
    for case_id in CASES:
        np.testing.assert_allclose(small[case_id].probability, large[case_id].probability, **SAME)
        np.testing.assert_allclose(small[case_id].uncertainty, large[case_id].uncertainty, **SAME)
    other_seed = _predict(model, store, CASES[:1], 64, sampler, seed=8)[CASES[0]].probability
    assert np.abs(other_seed - large[CASES[0]].probability).max() > 0.05  # the tolerance does tell samples apart


@pytest.mark.parametrize("fusion", ["mean", "staple"])
def test_cross_case_batches_give_what_case_by_case_prediction_gives(model, store, fusion):
    diffusion, config = sampling()
    together = _predict(model, store, CASES, 8, fusion=fusion)  # batches of 8 straddle every case boundary
    for case_id in CASES:
        alone = predict_case(model, store, case_id, kind="diffusion", diffusion=diffusion, sampler=config,
                             device=CPU, members=3, batch_size=64, seed=7, fusion=fusion)
        np.testing.assert_allclose(together[case_id].probability, alone.probability, **SAME)
        np.testing.assert_allclose(together[case_id].uncertainty, alone.uncertainty, **SAME)


def test_slices_without_brain_are_zero_and_cases_come_in_order(model, store):
    predictions = list(_predict(model, store, CASES, 8).values())
    assert [p.case_id for p in predictions] == CASES  # the brain-less case 3 keeps its place
    second, third = predictions[1], predictions[2]
    assert second.probability.shape == (5, 16, 16)
    assert not second.probability[1].any() and second.probability[0, 2:-2, 2:-2].any()
    assert third.probability.shape == (3, 16, 16) and not third.probability.any() and not third.uncertainty.any()
    assert not second.probability[:, :2].any()  # outside the brain: 0


def test_a_case_is_yielded_before_later_cases_are_read(model, store):
    """Only the cases of the batches in flight are held: never the whole list."""
    reads = []
    images = store.images

    class Spy:
        def __getattr__(self, name):
            return getattr(store, name)

        def images(self, rows):
            reads.append(np.asarray(rows).copy())
            return images(rows)

    diffusion, config = sampling()
    stream = predict_cases(model, Spy(), CASES, kind="diffusion", diffusion=diffusion, sampler=config, device=CPU,
                           members=2, batch_size=4, seed=0)
    first = next(stream)
    assert first.case_id == CASES[0]
    read_rows = np.concatenate(reads)
    # case 1 has 5 brain slices x 2 members = 10 samples: 3 batches of 4, the third reaching into case 2
    assert len(reads) == 3 and read_rows.max() < len(BRAIN[CASES[0]]) + len(BRAIN[CASES[1]])
    assert not np.isin(store.case_rows(CASES[3]), read_rows).any()


def test_background_prediction_keeps_order_and_raises_the_workers_error():
    assert list(in_background(lambda: iter(range(5)), ahead=2)) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise RuntimeError("sampling failed on case 2")

    stream = in_background(failing, ahead=2)
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="sampling failed on case 2"):
        next(stream)
