"""The sampling fast path: a compiled network of one fixed batch shape predicts what the eager one predicts.

On a CPU the tests compile with the ``aot_eager`` backend (the graph capture and functionalisation that
inductor also goes through, without generating kernels), so they run in seconds, not minutes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_sampling import BRAIN, SIZE, model_fixture, sampling, store_fixture  # noqa: F401 (fixtures)
from torch._dynamo.backends.registry import lookup_backend

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.evaluation.settings import resolve_setup
from isles_diffseg.evaluation.trained_model import TrainedModel
from isles_diffseg.inference.case_prediction import predict_cases
from isles_diffseg.inference.compiled_denoiser import FixedBatchModel, SamplingFastPath
from isles_diffseg.pipelines.evaluation.nodes import _predict
from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config

CPU = torch.device("cpu")
CASES = list(BRAIN)
CONF = Path(__file__).parents[2] / "conf" / "base"


class CountingBackend:
    """``aot_eager``, counting how many graphs it is asked to compile."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        self.graphs += 1
        return lookup_backend("aot_eager")(graph, example_inputs)


def _predict_all(model, store, case_ids, batch_size):
    diffusion, config = sampling()
    return {p.case_id: p.probability for p in predict_cases(
        model, store, case_ids, kind="diffusion", diffusion=diffusion, sampler=config, device=CPU, members=3,
        batch_size=batch_size, seed=7)}


@pytest.fixture(scope="module")
def compiled_run(model, store):
    """One compilation for the module: all cases, 13 brain slices x 3 members = 39 samples in batches of 8
    (the last padded by 1), 4 DDIM steps each."""
    backend = CountingBackend()
    compiled = FixedBatchModel(model, 8, backend=backend)
    return backend, compiled, _predict_all(compiled, store, CASES, 8)


def test_compiled_sampling_gives_the_eager_probabilities(model, store, compiled_run):
    _, _, compiled = compiled_run
    eager = _predict_all(model, store, CASES, 64)
    for case_id in CASES:
        np.testing.assert_allclose(compiled[case_id], eager[case_id], rtol=0, atol=1e-4)
    assert eager[CASES[0]].std() > 0.1  # not a trivial (all-equal) output that any graph would reproduce


def test_one_graph_serves_every_batch_and_padding_never_changes_a_result(store, compiled_run):
    backend, compiled, together = compiled_run
    assert backend.graphs == 1
    # each alone: 12 samples = a full batch and one of 4 padded with 4 zero samples, where in the run above
    # they shared batches with other cases: other padding, other neighbours, the same graph, the same bits
    for case_id in ("sub-stroke0004", "sub-stroke0002"):
        alone = _predict_all(compiled, store, [case_id], 8)[case_id]
        assert np.array_equal(alone, together[case_id])
    assert backend.graphs == 1


def test_larger_batches_are_split_into_the_fixed_shape(model, compiled_run):
    backend, compiled, _ = compiled_run
    x, image = torch.randn(19, 1, SIZE, SIZE), torch.rand(19, 2, SIZE, SIZE)
    t = torch.randint(0, 1000, (19,))
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x, t, image).numpy(), model(x, t, image).numpy(), rtol=0, atol=1e-5)
    assert backend.graphs == 1


def _trained(model) -> tuple[TrainedModel, dict]:
    variants = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}
    config = resolve_run_config({"model": "medsegdiff_tiny_cpu", "loss": "mse_with_aux_demo",
                                 "optimizer": "adamw_1e3lr_wd1e4", "scheduler": "constant", "augmentation": "none",
                                 "diffusion": "ddim10", "recipe": "train_test_tiny", "run_name": "t"},
                                variants, image_channels=2, image_size=SIZE)
    return TrainedModel("t", model, config, Path("none"), 0, ["cbf", "tmax"], 0, SIZE), variants


@pytest.mark.parametrize(("fast_path", "compiled"), [("auto", False), (False, False), (True, True)])
def test_the_evaluation_switch_reaches_the_sampler(model, store, fast_path, compiled):
    """``evaluation.fast_path``: auto is eager on a CPU; true compiles (here with aot_eager) and the nodes share it."""
    trained, variants = _trained(model)
    model.__dict__.pop("_sampling_fast_path", None)
    evaluation = {"fast_path": fast_path, "compile_backend": "aot_eager", "members": 2, "batch_size": 8,
                  "diffusion": None, "prefetch_cases": 1}
    setup = resolve_setup(evaluation, trained, variants, CPU)
    assert setup.fast_path.enabled is compiled
    predictions = list(_predict(trained, setup, store, ["sub-stroke0001", "sub-stroke0003"]))
    assert [p.case_id for p in predictions] == ["sub-stroke0001", "sub-stroke0003"]
    wrappers = model.__dict__.get("_sampling_fast_path", {})
    assert [type(w) for w in wrappers.values()] == ([FixedBatchModel] if compiled else [])
    if compiled:  # the threshold sweep and the test predictions of one kedro run use one compiled network
        assert setup.fast_path.wrap(model, 8) is next(iter(wrappers.values()))
    model.__dict__.pop("_sampling_fast_path", None)


def test_the_compile_settings_reach_torch_compile(model):
    with pytest.raises(Exception, match="Invalid backend: 'no_such_backend'"):
        SamplingFastPath(True, compile_backend="no_such_backend").wrap(model, 8)
    assert SamplingFastPath(False, compile_backend="no_such_backend").wrap(model, 8) is model  # eager: never used
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        SamplingFastPath.from_settings({"fast_path": True, "compile_mode": "fastest"}, CPU)
    with pytest.raises(ValueError, match="fast_path must be auto, true or false"):
        SamplingFastPath.from_settings({"fast_path": "yes"}, CPU)
    assert SamplingFastPath.from_settings({}, torch.device("cuda")).enabled  # auto: on for CUDA


def test_training_validation_can_sample_on_the_fast_path(model, store):
    from isles_diffseg.training.validation import validate

    diffusion, config = sampling()
    kwargs = {"kind": "diffusion", "diffusion": diffusion, "sampler": config, "device": CPU, "batch_size": 8,
              "members": 2, "seed": 3}
    eager = validate(model, store, CASES, **kwargs).per_case
    fast = validate(model, store, CASES, fast_path=SamplingFastPath(True, compile_backend="aot_eager"), **kwargs)
    pd_cols = ["case_id", "gt_pixels", "pred_pixels"]
    assert fast.per_case[pd_cols].equals(eager[pd_cols])
    np.testing.assert_allclose(fast.per_case["dice_3d"], eager["dice_3d"], atol=1e-6)
    assert eager["pred_pixels"].sum() > 0
    model.__dict__.pop("_sampling_fast_path", None)


@pytest.mark.parametrize(("mode", "backend", "cuda_graphs"), [
    ("default", "inductor", False), ("reduce-overhead", "inductor", True), ("max-autotune", "inductor", True),
    ("max-autotune-no-cudagraphs", "inductor", False), ("reduce-overhead", "aot_eager", False)])
def test_cuda_graph_modes_predict_in_the_nodes_thread(model, mode, backend, cuda_graphs):
    """torch's cudagraph trees are not reliable in other threads than the main one (pytorch#123177)."""
    from isles_diffseg.pipelines.evaluation.nodes import _ahead

    trained, variants = _trained(model)
    setup = resolve_setup({"fast_path": True, "compile_mode": mode, "compile_backend": backend, "prefetch_cases": 2},
                          trained, variants, CPU)
    assert setup.fast_path.cuda_graphs is cuda_graphs
    assert _ahead(setup) == (0 if cuda_graphs else 2)


def test_channels_last_reaches_the_network_and_keeps_its_outputs(model):
    """``evaluation.channels_last``: the wrapped network's convolution weights are stored NHWC (the layout the
    setting asks for) and it still computes what the NCHW network computes."""
    import copy

    nhwc = copy.deepcopy(model)  # the module fixture stays NCHW for the other tests
    wrapped = SamplingFastPath(True, compile_backend="aot_eager", channels_last=True).wrap(nhwc, 8)
    convs = [p for p in nhwc.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous(memory_format=torch.channels_last)
                   for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1)
    x, image = torch.randn(5, 1, SIZE, SIZE), torch.rand(5, 2, SIZE, SIZE)
    t = torch.tensor([0, 10, 100, 500, 999])
    with torch.no_grad():
        np.testing.assert_allclose(wrapped(x, t, image).numpy(), model(x, t, image).numpy(), rtol=0, atol=1e-5)
