"""DDIM and ancestral samplers: exactness with an oracle model, timesteps, marginals, no-grad, AMP."""

import pytest
import torch
from diffusion_oracle import OracleModel, make_clean_mask

from isles_diffseg.diffusion import (
    GaussianDiffusion,
    ddim_sample,
    ddpm_sample,
    get_beta_schedule,
    space_timesteps,
)
from isles_diffseg.diffusion.samplers import snapshot_positions


@pytest.fixture
def clean_mask():
    return make_clean_mask()


def process(model_output="epsilon", schedule="cosine", variance="fixed_small"):
    return GaussianDiffusion(get_beta_schedule(schedule, 1000), model_output=model_output, variance=variance)


@pytest.mark.parametrize("kind", ["epsilon", "x0", "v"])
def test_ddim_eta0_with_oracle_recovers_x0(kind, clean_mask):
    diffusion = process(kind)
    result = ddim_sample(diffusion, OracleModel(diffusion), clean_mask, respacing="ddim50")
    assert result.sample.shape == clean_mask.shape and result.sample.dtype == torch.float32
    torch.testing.assert_close(result.sample, clean_mask, atol=1e-5, rtol=0)
    assert result.snapshots_xt is None and result.snapshot_timesteps == ()


def test_trailing_chain_asks_the_model_at_the_last_timestep_first_and_returns_its_last_x0(clean_mask):
    diffusion = process("x0")
    seen, outputs = [], iter([torch.full_like(clean_mask, 0.25), torch.full_like(clean_mask, -0.5)])

    def model(x_t, t, image):
        seen.append(t.tolist())
        return next(outputs)

    result = ddim_sample(diffusion, model, clean_mask, respacing="trailing2")
    assert seen == [[999] * clean_mask.shape[0], [499] * clean_mask.shape[0]]
    torch.testing.assert_close(result.sample, torch.full_like(clean_mask, -0.5))  # the x0 predicted at t = 499


def test_ddim_over_the_full_chain_recovers_x0(clean_mask):
    diffusion = process("v", schedule="linear")
    result = ddim_sample(diffusion, OracleModel(diffusion), clean_mask, respacing=None)
    torch.testing.assert_close(result.sample, clean_mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["epsilon", "v"])
def test_ddim_eta0_follows_the_deterministic_trajectory_of_its_initial_noise(kind, clean_mask):
    # With the true noise, DDIM (eta=0) keeps eps fixed: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_T.
    diffusion = process(kind)
    x_T = torch.randn(clean_mask.shape, generator=torch.Generator().manual_seed(3))
    result = ddim_sample(
        diffusion, OracleModel(diffusion), clean_mask, respacing="ddim50", noise=x_T, snapshots=6
    )
    first = torch.tensor([space_timesteps(1000, "ddim50")[-1]])  # the chain starts at t=980, not 999
    eps_T = diffusion.predict_eps_from_x0(x_T.double(), first, clean_mask.double())
    assert len(result.snapshot_timesteps) == 6
    for timestep, x_t, x0 in zip(
        result.snapshot_timesteps, result.snapshots_xt, result.snapshots_x0, strict=True
    ):
        t = torch.full((clean_mask.shape[0],), timestep)
        expected = diffusion.q_sample(clean_mask.double(), t, eps_T)
        torch.testing.assert_close(x_t.double(), expected, atol=2e-4, rtol=0)
        torch.testing.assert_close(x0, clean_mask, atol=1e-3, rtol=0)


def test_snapshots_are_labelled_with_evenly_spaced_original_timesteps(clean_mask):
    diffusion = process()
    kept = space_timesteps(1000, "ddim50")
    result = ddim_sample(diffusion, OracleModel(diffusion), clean_mask, snapshots=5)
    assert result.snapshot_timesteps == (980, 740, 500, 240, 0)
    assert set(result.snapshot_timesteps) <= set(kept)
    assert result.snapshots_xt.shape == result.snapshots_x0.shape == (5, *clean_mask.shape)
    assert snapshot_positions(50, 100) == list(range(50))
    assert snapshot_positions(50, 0) == [] and snapshot_positions(50, False) == []
    with pytest.raises(TypeError):
        snapshot_positions(50, True)


@pytest.mark.parametrize("spec", ["ddim50", "10,10,30", None])
def test_samplers_pass_original_timesteps_to_the_model(spec, clean_mask):
    diffusion = process()
    expected = list(reversed(space_timesteps(1000, spec) if spec else range(1000)))
    for sampler in (ddim_sample, ddpm_sample):
        model = OracleModel(diffusion)
        sampler(diffusion, model, clean_mask, respacing=spec)
        assert [int(t[0]) for t in model.timesteps] == expected
        assert all(t.dtype == torch.long and t.shape == (2,) for t in model.timesteps)


def test_ddpm_with_oracle_lands_on_x0(clean_mask):
    diffusion = process("x0")
    generator = torch.Generator().manual_seed(0)
    result = ddpm_sample(
        diffusion, OracleModel(diffusion), clean_mask, respacing="ddim50", generator=generator
    )
    torch.testing.assert_close(result.sample, clean_mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        (ddpm_sample, {"respacing": "ddim50"}),
        (ddpm_sample, {"respacing": "ddim250"}),
        (ddim_sample, {"eta": 1.0}),
    ],
)
def test_stochastic_chains_with_oracle_keep_the_forward_marginals(sampler, options):
    # With the true x0, each step draws from q(x_{t-1} | x_t, x0) of the (respaced) chain, so every state
    # is distributed as q(x_t | x0) = N(sqrt(abar) x0, 1 - abar). A wrong variance breaks this.
    diffusion = process()
    clean = torch.full((8, 1, 32, 32), 0.5)
    result = sampler(
        diffusion,
        OracleModel(diffusion),
        clean,
        generator=torch.Generator().manual_seed(1),
        snapshots=5,
        **options,
    )
    for timestep, x_t in zip(result.snapshot_timesteps[1:-1], result.snapshots_xt[1:-1], strict=True):
        alpha_bar = float(diffusion.alphas_cumprod[timestep])
        residual = (x_t - alpha_bar**0.5 * clean).flatten()
        assert residual.mean().abs() < 4 * (1 - alpha_bar) ** 0.5 / residual.numel() ** 0.5
        assert residual.var().item() == pytest.approx(1 - alpha_bar, rel=0.08)


def test_ddpm_fixed_large_adds_more_noise_than_fixed_small():
    clean = torch.zeros(4, 1, 16, 16)
    spread = {}
    for variance in ("fixed_small", "fixed_large"):
        diffusion = process(variance=variance)
        result = ddpm_sample(
            diffusion, OracleModel(diffusion), clean, respacing="ddim50", snapshots=50,
            generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
        spread[variance] = result.snapshots_xt[-1].std().item()  # state entering the last step (t=20)
    assert spread["fixed_large"] > 1.5 * spread["fixed_small"]


class ConvModel(torch.nn.Module):
    """A model with trainable parameters that records its output dtype and grad mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        self.output_dtypes: list[torch.dtype] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x_t, t, image):
        out = self.conv(torch.cat([x_t, image], dim=1))
        self.output_dtypes.append(out.dtype)
        self.grad_enabled.append(torch.is_grad_enabled())
        return {"output": out, "calibration_logits": out}


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample])
def test_sampling_keeps_no_autograd_graph(sampler):
    model = ConvModel()
    result = sampler(process(), model, torch.randn(2, 2, 8, 8), respacing="ddim10", snapshots=3)
    assert not any(model.grad_enabled)
    assert not result.sample.requires_grad and not result.snapshots_x0.requires_grad
    assert not result.snapshots_xt.requires_grad


def test_bfloat16_autocast_on_cpu_runs_the_model_in_bf16_and_updates_in_float32():
    model = ConvModel()
    result = ddim_sample(
        process(), model, torch.randn(2, 2, 8, 8), respacing="ddim10", amp_dtype=torch.bfloat16
    )
    assert set(model.output_dtypes) == {torch.bfloat16}
    assert result.sample.dtype == torch.float32 and torch.isfinite(result.sample).all()


def test_output_has_mask_channels_and_generator_makes_it_reproducible():
    diffusion, image = process(), torch.randn(3, 4, 8, 8)

    def model(x_t, t, image):
        return x_t * 0.1

    draws = [
        ddpm_sample(
            diffusion,
            model,
            image,
            respacing="ddim10",
            mask_channels=2,
            generator=torch.Generator().manual_seed(4),
        )
        for _ in range(2)
    ]
    assert draws[0].sample.shape == (3, 2, 8, 8)
    assert torch.equal(draws[0].sample, draws[1].sample)


def test_bad_sampler_inputs_are_rejected(clean_mask):
    diffusion = process()

    def model(x_t, t, image):
        return x_t

    with pytest.raises(ValueError, match="eta"):
        ddim_sample(diffusion, model, clean_mask, eta=-0.1)
    with pytest.raises(ValueError, match="initial noise"):
        ddim_sample(diffusion, model, clean_mask, noise=torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="amp_dtype"):
        ddim_sample(diffusion, model, clean_mask, amp_dtype=torch.float64)
    with pytest.raises(ValueError, match="model output shape"):
        ddim_sample(diffusion, lambda x, t, image: x[..., :2], clean_mask)


@pytest.mark.parametrize("respacing", ["ddim50", None])
def test_ddim_with_eta1_is_ancestral_sampling_with_the_posterior_variance(respacing):
    diffusion, image = process(), torch.randn(2, 1, 4, 4)

    def model(x_t, t, image):
        return torch.tanh(x_t + image) * 3  # any model will do; large outputs exercise the x0 clipping

    ddim = ddim_sample(
        diffusion, model, image, respacing=respacing, eta=1.0, generator=torch.Generator().manual_seed(7)
    )
    ddpm = ddpm_sample(
        diffusion, model, image, respacing=respacing, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(ddim.sample, ddpm.sample, atol=1e-4, rtol=0)


def test_clip_x0_bounds_the_x0_estimates_and_the_sample():
    diffusion, image = process(), torch.zeros(2, 1, 4, 4)

    def model(x_t, t, image):
        return torch.full_like(x_t, -3.0)  # eps far from the truth pushes x0 estimates outside [-1, 1]

    clipped = ddim_sample(
        diffusion, model, image, respacing="ddim10", snapshots=10, noise=torch.ones(2, 1, 4, 4)
    )
    free = ddim_sample(
        diffusion, model, image, respacing="ddim10", snapshots=10, noise=torch.ones(2, 1, 4, 4), clip_x0=False
    )
    assert clipped.snapshots_x0.abs().max() <= 1 and clipped.sample.abs().max() <= 1
    assert free.snapshots_x0.abs().max() > 1
