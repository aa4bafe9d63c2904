"""Validation diagnostics for a run that does not learn: volumes, probability histograms, x_0 chains.

The models here are stand-ins whose output is known exactly, over a slice store whose masks are drawn
by hand, so every expected number below is computed by hand from this layout (8x8 slices, brain = the
first 6 rows, i.e. 48 pixels per slice):

    case 1: slice 0 lesion 2x2 (4 px), slice 1 lesion 3x3 (9 px)   -> 13 lesion px, 96 brain px
    case 2: no lesion                                                ->  0 lesion px, 96 brain px
    case 3: slice 0 lesion 4x4 (16 px), slice 1 has no brain at all  -> 16 lesion px, 48 brain px
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from isles_diffseg.data.slice_store import CaseSlices, SliceStore, SliceStoreWriter
from isles_diffseg.data.slicing import SliceGeometry
from isles_diffseg.diffusion import GaussianDiffusion, ddim_sample, ddpm_sample, signal_to_probability
from isles_diffseg.inference.predict import SamplerConfig
from isles_diffseg.training import mlflow_sink
from isles_diffseg.training.validation import (
    ValidationResult,
    denoising_chain,
    summarise_validation,
    summed_counts,
    validate,
)

CASES = ["sub-stroke0001", "sub-stroke0002", "sub-stroke0003"]
GT_PIXELS = [13, 0, 16]
BRAIN_PIXELS = [96, 96, 48]
CPU = torch.device("cpu")
DDIM10 = SamplerConfig("ddim", "ddim10", 0.0, True)
# ddim10 keeps timesteps 0, 100, ..., 900; 6 snapshots sit at loop positions rint(linspace(0, 9, 6)) =
# 0, 2, 4, 5, 7, 9, i.e. at steps 9, 7, 5, 4, 2, 0 counted from the start of the chain.
CHAIN_TIMESTEPS = (900, 700, 500, 400, 200, 0)
LESION_BIN = 10  # p = 0.5 falls in [0.50, 0.55), the 11th of 20 bins


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SliceStore:
    size = 8
    writer = SliceStoreWriter(tmp_path_factory.mktemp("store") / "slices", n_slices=6, channels=2, image_size=size,
                              meta={"modalities": ["cbf", "tmax"], "window_preset": "baseline", "context_slices": 0,
                                    "channel_layout": "slice_major", "mask_interpolation": "rebinarise"})
    brain_slice = np.zeros((size, size), np.uint8)
    brain_slice[:6] = 1
    layouts = [
        ([(slice(1, 3), slice(1, 3)), (slice(2, 5), slice(2, 5))], [True, True]),
        ([None, None], [True, True]),
        ([(slice(0, 4), slice(4, 8)), None], [True, False]),
    ]
    for case_id, (lesions, has_brain) in zip(CASES, layouts, strict=True):
        masks = np.zeros((2, size, size), np.uint8)
        for z, lesion in enumerate(lesions):
            if lesion is not None:
                masks[z][lesion] = 1
        brain = np.stack([brain_slice if b else np.zeros_like(brain_slice) for b in has_brain])
        # channel 1 shows the lesion, so an "oracle" model can read the answer off its input
        images = np.stack([np.full(masks.shape, 0.5), masks], axis=1).astype(np.float32)
        writer.add(CaseSlices(case_id, images, masks, brain, SliceGeometry.plan((size, size, 2), size)))
    return writer.close()


class ConstantLogits(nn.Module):
    """A UNet stand-in whose probability is sigmoid(logit) at every pixel."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit

    model_kind = "discriminative"

    def forward(self, image):
        return torch.full_like(image[:, :1], self.logit)


class FadingOracle(nn.Module):
    """A denoiser of an x0-parameterised process: the true mask signal scaled by (1 - t / 1000).

    So the x_0 estimate at timestep t is the probability 1 - t/2000 on the lesion and t/2000 elsewhere,
    whatever the noise, and the final sample (t = 0) is the ground truth.
    """

    def forward(self, x, t, image):
        fade = (1.0 - t.float() / 1000.0).view(-1, 1, 1, 1)
        return torch.where(image[:, 1:2] > 0.5, 1.0, -1.0) * fade


class TinyEpsilonModel(nn.Module):
    """An untrained epsilon-predicting denoiser: its samples depend on the noise."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        with torch.no_grad():  # fixed weights, leaving the global RNG alone
            self.conv.weight.copy_(torch.linspace(-0.5, 0.5, 27).view(1, 3, 3, 3))
            self.conv.bias.zero_()

    def forward(self, x, t, image):
        return self.conv(torch.cat([x, image], dim=1))


def _validate(store, model, cases=CASES, **kwargs) -> ValidationResult:
    options = {"kind": "discriminative", "diffusion": None, "sampler": None, "device": CPU, "batch_size": 4}
    return validate(model, store, cases, **{**options, **kwargs})


def _diffusion(store, n_examples=2, cases=CASES) -> ValidationResult:
    return _validate(store, FadingOracle(), cases, kind="diffusion", sampler=DDIM10, n_examples=n_examples,
                     diffusion=GaussianDiffusion.from_schedule("cosine", 1000, "x0"))


def test_an_all_empty_model_shows_as_empty_predictions_and_a_negative_bias(store):
    result = _validate(store, ConstantLogits(-30.0))
    assert result.per_case["gt_pixels"].tolist() == GT_PIXELS
    assert result.per_case["pred_pixels"].tolist() == [0, 0, 0]
    assert result.metrics["val_empty_predictions"] == 2  # the two cases with a lesion
    assert result.metrics["val_volume_bias_pixels"] == pytest.approx(-29 / 3)  # minus the mean true volume
    assert result.metrics["val_volume_abs_error_pixels"] == pytest.approx(29 / 3)


def test_a_model_predicting_all_brain_shows_a_positive_bias_and_no_empty_prediction(store):
    result = _validate(store, ConstantLogits(0.0))  # p = 0.5 >= threshold everywhere in the brain
    assert result.per_case["pred_pixels"].tolist() == BRAIN_PIXELS
    assert result.metrics["val_empty_predictions"] == 0
    # errors 96 - 13, 96 - 0, 48 - 16
    assert result.metrics["val_volume_bias_pixels"] == pytest.approx(211 / 3)
    assert result.metrics["val_volume_abs_error_pixels"] == pytest.approx(211 / 3)
    assert result.per_case["dice_3d"].tolist() == pytest.approx([26 / 109, 0.0, 32 / 64])


@pytest.mark.parametrize(("logit", "expected_bin"), [(-30.0, 0), (0.0, LESION_BIN)])
def test_a_constant_probability_puts_every_brain_pixel_in_one_bin(store, logit, expected_bin):
    per_case = _validate(store, ConstantLogits(logit)).per_case
    for lesion, background, gt, brain in zip(per_case["hist_lesion"], per_case["hist_background"], GT_PIXELS,
                                             BRAIN_PIXELS, strict=True):
        assert len(lesion) == len(background) == 20
        assert sum(lesion) + sum(background) == brain  # brain pixels only, the padding is not counted
        assert lesion[expected_bin] == gt and background[expected_bin] == brain - gt


def test_histograms_and_metrics_survive_the_trainers_gather_of_per_rank_frames(store):
    whole = _validate(store, ConstantLogits(0.0))
    ranks = [_validate(store, ConstantLogits(0.0), CASES[:1]), _validate(store, ConstantLogits(0.0), CASES[1:])]
    per_case = pd.concat([rank.per_case for rank in ranks], ignore_index=True)
    pd.testing.assert_frame_equal(per_case, whole.per_case)
    assert summarise_validation(per_case) == whole.metrics
    lesion, background = summed_counts(per_case)
    assert lesion.tolist() == [0] * LESION_BIN + [29] + [0] * 9
    assert background.tolist() == [0] * LESION_BIN + [83 + 96 + 32] + [0] * 9


def test_the_chain_runs_from_the_noisiest_timestep_to_the_final_prediction(store):
    result = _diffusion(store)
    assert result.metrics["val_dice_3d"] == 1.0 and result.metrics["val_empty_predictions"] == 0
    first, second = result.examples
    assert first["case_id"] == CASES[0] and second["case_id"] == CASES[1]
    for example in result.examples:
        assert example["chain_timesteps"] == CHAIN_TIMESTEPS
        assert example["chain_x0"].shape == (6, 8, 8) and example["chain_x0"].dtype == np.float32
        # the last estimate is the prediction itself, which this oracle makes the ground truth
        np.testing.assert_array_equal(example["chain_x0"][-1], example["prob"])
        np.testing.assert_array_equal(example["prob"], example["gt"])
    brain = np.zeros((8, 8), bool)
    brain[:6] = True
    lesion = first["gt"].astype(bool)  # the 3x3 lesion of case 1's slice 1, its largest
    assert lesion.sum() == 9
    for x0, t in zip(first["chain_x0"], CHAIN_TIMESTEPS, strict=True):
        np.testing.assert_allclose(x0[lesion], 1 - t / 2000, atol=1e-6)
        np.testing.assert_allclose(x0[brain & ~lesion], t / 2000, atol=1e-6)
        assert not x0[~brain].any()


def test_asking_for_chains_leaves_the_validation_numbers_unchanged(store):
    model = TinyEpsilonModel()
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    sampler = SamplerConfig("ddim", "ddim10", 1.0, True)  # eta > 0: the samples draw noise at every step
    plain, with_chains = (_validate(store, model, kind="diffusion", diffusion=diffusion, sampler=sampler,
                                    n_examples=n, seed=5) for n in (0, 2))
    pd.testing.assert_frame_equal(plain.per_case, with_chains.per_case)
    assert len(with_chains.examples) == 2


@pytest.mark.parametrize("sample_fn", [ddim_sample, ddpm_sample])
def test_the_last_chain_estimate_is_the_sample_for_the_same_noise(store, sample_fn):
    sampler = SamplerConfig("ddim" if sample_fn is ddim_sample else "ddpm", "ddim10", 0.0, True)
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    image = torch.from_numpy(store.images(store.case_rows(CASES[0])))
    model = TinyEpsilonModel().eval()
    chain, timesteps = denoising_chain(model, image, diffusion=diffusion, sampler=sampler, amp_dtype=None,
                                       generator=torch.Generator().manual_seed(3))
    options = {"eta": 0.0} if sample_fn is ddim_sample else {}
    sample = sample_fn(diffusion, model, image, respacing="ddim10", generator=torch.Generator().manual_seed(3),
                       **options).sample
    assert timesteps == CHAIN_TIMESTEPS and chain.shape == (6, 2, 8, 8)
    np.testing.assert_allclose(chain[-1], signal_to_probability(sample)[:, 0].numpy(), atol=1e-6)
    assert not np.array_equal(chain[0], chain[-1])  # the noisiest estimate is not yet the answer


class RecordingLogger:
    """Stands in for ModelRunLogger: keeps the figures instead of sending them to MLflow."""

    def __init__(self, run_id: str):
        self.figures: dict[str, object] = {}

    def figure(self, figure, path: str) -> None:
        self.figures[path] = figure


@pytest.fixture
def sink(monkeypatch) -> mlflow_sink.MlflowSink:
    monkeypatch.setattr(mlflow_sink, "ModelRunLogger", RecordingLogger)
    return mlflow_sink.MlflowSink("run")


def test_the_sink_logs_volume_histogram_grid_and_chain_figures(store, sink):
    result = _diffusion(store)
    sink.log_validation(result, 7, ["cbf", "tmax"])
    figures = sink.log.figures
    assert set(figures) == {f"validation/{name}_step00000007.png" for name in
                            ("volume", "probability_histogram", "grid", "denoising_chain")}
    scatter = figures["validation/volume_step00000007.png"].axes[0]
    # the oracle's final samples are the ground truth: every case on the identity line
    np.testing.assert_array_equal(scatter.collections[0].get_offsets(), [[13, 13], [0, 0], [16, 16]])
    histogram = figures["validation/probability_histogram_step00000007.png"].axes[0]
    assert histogram.get_yscale() == "log"
    (background, _, _), (lesion, _, _) = (patch.get_data() for patch in histogram.patches)
    assert lesion.tolist() == [0] * 19 + [29] and background.tolist() == [211] + [0] * 19
    chain = figures["validation/denoising_chain_step00000007.png"]
    titles = [ax.get_title() for ax in chain.axes[:8]]
    assert titles == ["cbf", "ground truth", *(f"x0 at t={t}" for t in CHAIN_TIMESTEPS)]
    assert len(chain.axes) == 2 * 8  # one row per example


def test_the_sink_logs_no_chain_figure_for_a_unet(store, sink):
    sink.log_validation(_validate(store, ConstantLogits(0.0), n_examples=1), 3, ["cbf", "tmax"])
    assert set(sink.log.figures) == {f"validation/{name}_step00000003.png" for name in
                                     ("volume", "probability_histogram", "grid")}


class SpillModel(nn.Module):
    """A UNet stand-in with probability 0.95 on the lesion and 0.85 on the rest of the brain."""

    model_kind = "discriminative"

    def forward(self, image):
        probability = torch.where(image[:, 1:2] > 0.5, 0.95, 0.85)
        return torch.log(probability / (1 - probability))


def test_a_swept_threshold_scores_what_the_fixed_one_misses_and_the_rest_stays_at_the_fixed_one(store):
    result = _validate(store, SpillModel(), thresholds=[0.5, 0.9])
    # at 0.5 every brain pixel is predicted (as in the all-brain test above); at 0.9 exactly the lesions
    np.testing.assert_allclose(result.per_case["dice_3d_by_threshold"].tolist(),
                               [[26 / 109, 1.0], [0.0, 1.0], [32 / 64, 1.0]])  # case 2: empty vs empty at 0.9
    assert result.metrics["val_dice_3d_swept"] == 1.0 and result.metrics["val_threshold_swept"] == 0.9
    assert result.metrics["val_dice_3d"] == pytest.approx((26 / 109 + 0 + 32 / 64) / 3)
    assert result.per_case["pred_pixels"].tolist() == BRAIN_PIXELS  # volumes and histograms: at 0.5
    # a tie (every candidate predicts all brain pixels) goes to the candidate closest to 0.5, as in evaluation
    tied = _validate(store, SpillModel(), thresholds=[0.3, 0.6, 0.8])
    assert tied.metrics["val_threshold_swept"] == 0.6
    assert tied.metrics["val_dice_3d_swept"] == pytest.approx(result.metrics["val_dice_3d"])
    # without thresholds nothing is swept
    assert "val_dice_3d_swept" not in _validate(store, SpillModel()).metrics


def test_the_swept_dice_survives_the_trainers_gather_of_per_rank_frames(store):
    whole = _validate(store, SpillModel(), thresholds=[0.5, 0.9])
    ranks = [_validate(store, SpillModel(), CASES[:2], thresholds=[0.5, 0.9]),
             _validate(store, SpillModel(), CASES[2:], thresholds=[0.5, 0.9])]
    per_case = pd.concat([rank.per_case for rank in ranks], ignore_index=True)
    assert summarise_validation(per_case, [0.5, 0.9]) == whole.metrics
