"""Forward process, posterior, parameterisation conversions and training terms of GaussianDiffusion."""

import pytest
import torch

from isles_diffseg.diffusion import GaussianDiffusion, get_beta_schedule, space_timesteps, unpack_model_output


def process(model_output="epsilon", schedule="cosine", num_timesteps=1000):
    return GaussianDiffusion(get_beta_schedule(schedule, num_timesteps), model_output=model_output)


def test_buffers_are_float64_tables_of_one_value_per_step():
    diffusion = process()
    assert diffusion.num_timesteps == 1000
    for name in (
        "betas",
        "alphas_cumprod",
        "posterior_variance",
        "posterior_mean_coef1",
        "model_log_variance",
    ):
        table = getattr(diffusion, name)
        assert table.dtype == torch.float64 and table.shape == (1000,)
    assert diffusion.alphas_cumprod_prev[0] == 1.0
    torch.testing.assert_close(diffusion.alphas_cumprod_prev[1:], diffusion.alphas_cumprod[:-1])


def test_q_sample_is_sqrt_alpha_bar_signal_plus_noise():
    diffusion = process(schedule="linear")
    x_start, noise = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    t = torch.tensor([0, 500, 999])
    alpha_bar = diffusion.alphas_cumprod[t].float().reshape(3, 1, 1, 1)
    expected = alpha_bar.sqrt() * x_start + (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(diffusion.q_sample(x_start, t, noise), expected)


def test_posterior_matches_the_gaussian_product_formula():
    diffusion = process(schedule="linear", num_timesteps=100)
    t = torch.tensor([1, 50, 99])
    x_start, x_t = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    beta = diffusion.betas[t].reshape(3, 1, 1, 1)
    alpha_bar_prev = diffusion.alphas_cumprod[t - 1].reshape(3, 1, 1, 1)
    # q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(1-beta) x_{t-1}, beta) N(x_{t-1}; sqrt(abar_prev) x_0, 1-abar_prev)
    precision = (1 - beta) / beta + 1 / (1 - alpha_bar_prev)
    mean = (
        (1 - beta).sqrt() / beta * x_t + alpha_bar_prev.sqrt() / (1 - alpha_bar_prev) * x_start
    ) / precision
    got_mean, got_variance, got_log_variance = diffusion.q_posterior_mean_variance(x_start, x_t, t)
    torch.testing.assert_close(got_mean, mean)
    torch.testing.assert_close(got_variance, 1 / precision)
    torch.testing.assert_close(got_log_variance, got_variance.log())


def test_fixed_variances_are_posterior_variance_or_beta():
    betas = get_beta_schedule("cosine", 100)
    small = GaussianDiffusion(betas, variance="fixed_small")
    large = GaussianDiffusion(betas, variance="fixed_large")
    torch.testing.assert_close(small.model_log_variance[1:], small.posterior_variance[1:].log())
    torch.testing.assert_close(large.model_log_variance[1:], large.betas[1:].log())
    assert torch.isfinite(small.model_log_variance).all() and torch.isfinite(large.model_log_variance).all()


def test_eps_x0_v_conversions_round_trip():
    diffusion = process()
    generator = torch.Generator().manual_seed(1)
    x_start = torch.rand(4, 1, 3, 3, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 1, 3, 3, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 990])
    x_t = diffusion.q_sample(x_start, t, noise)
    v = diffusion.v_target(x_start, t, noise)
    torch.testing.assert_close(diffusion.predict_x0_from_eps(x_t, t, noise), x_start)
    torch.testing.assert_close(diffusion.predict_eps_from_x0(x_t, t, x_start), noise)
    torch.testing.assert_close(diffusion.predict_x0_from_v(x_t, t, v), x_start)
    torch.testing.assert_close(diffusion.predict_eps_from_v(x_t, t, v), noise)


@pytest.mark.parametrize("kind", ["epsilon", "x0", "v"])
def test_training_target_and_x0_estimate_follow_the_parameterisation(kind):
    diffusion = process(kind)
    x_start, noise = (
        torch.rand(2, 1, 2, 2, dtype=torch.float64) * 2 - 1,
        torch.randn(2, 1, 2, 2, dtype=torch.float64),
    )
    t = torch.tensor([3, 700])
    x_t = diffusion.q_sample(x_start, t, noise)
    target = diffusion.training_target(x_start, noise, t)
    expected = {"epsilon": noise, "x0": x_start, "v": diffusion.v_target(x_start, t, noise)}[kind]
    torch.testing.assert_close(target, expected)
    torch.testing.assert_close(diffusion.predict_x0(x_t, t, target), x_start)
    x0, eps = diffusion.x0_and_eps(x_t, t, target, clip_x0=False)
    torch.testing.assert_close(x0, x_start)
    torch.testing.assert_close(eps, noise)


def test_x0_and_eps_clips_x0_and_keeps_eps_consistent_with_it():
    diffusion = process()
    x_t, t = torch.randn(2, 1, 2, 2, dtype=torch.float64), torch.tensor([900, 950])
    x0, eps = diffusion.x0_and_eps(x_t, t, torch.randn(2, 1, 2, 2, dtype=torch.float64) * 5, clip_x0=True)
    assert x0.abs().max() <= 1
    torch.testing.assert_close(diffusion.predict_x0_from_eps(x_t, t, eps), x0)


def test_snr_and_alpha_bar_lookups():
    diffusion = process()
    t = torch.tensor([0, 499, 999])
    alpha_bar = diffusion.alphas_cumprod[t]
    torch.testing.assert_close(diffusion.alpha_bar(t), alpha_bar.float())
    torch.testing.assert_close(diffusion.snr(t, dtype=torch.float64), alpha_bar / (1 - alpha_bar))
    assert torch.all(diffusion.snr(t)[:-1] > diffusion.snr(t)[1:])


class ZeroModel(torch.nn.Module):
    """Outputs zeros through a parameter so gradients can be checked; may add extra outputs."""

    def __init__(self, extras: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.extras = extras
        self.timesteps: list[torch.Tensor] = []

    def forward(self, x_t, t, image):
        self.timesteps.append(t)
        output = x_t * self.weight
        return {"output": output, "calibration_logits": image.sum(1, keepdim=True)} if self.extras else output


def test_training_terms_samples_t_over_the_full_process():
    diffusion = process()
    x_start = torch.zeros(4096, 1, 1, 1)
    terms = diffusion.training_terms(
        ZeroModel(), x_start, x_start, generator=torch.Generator().manual_seed(0)
    )
    t = terms["t"]
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < 1000
    assert int(t.min()) < 20 and int(t.max()) > 980
    not_in_ddim50 = set(t.tolist()) - set(space_timesteps(1000, "ddim50"))
    assert len(not_in_ddim50) > 500


def test_training_terms_reports_per_sample_quantities():
    diffusion = process("v")
    model = ZeroModel(extras=True)
    x_start, image = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 2, 4, 4)
    noise, t = torch.randn(3, 1, 4, 4), torch.tensor([0, 400, 999])
    terms = diffusion.training_terms(model, x_start, image, t=t, noise=noise)
    target = diffusion.v_target(x_start, t, noise)
    torch.testing.assert_close(terms["x_t"], diffusion.q_sample(x_start, t, noise))
    torch.testing.assert_close(terms["target"], target)
    torch.testing.assert_close(terms["mse"], target.pow(2).mean(dim=(1, 2, 3)))
    assert terms["mse"].shape == (3,) and terms["mse"].requires_grad
    assert torch.equal(model.timesteps[0], t) and terms["t"] is t and terms["noise"] is noise
    torch.testing.assert_close(terms["extras"]["calibration_logits"], image.sum(1, keepdim=True))
    # v = 0 means x0 = sqrt(abar) x_t; unclamped, so it can leave [-1, 1] when x_t does.
    torch.testing.assert_close(
        terms["pred_x0"], diffusion.predict_x0_from_v(terms["x_t"], t, torch.zeros(3, 1, 4, 4))
    )


def test_training_terms_pred_x0_is_not_clamped():
    diffusion = process("epsilon")
    x_start = torch.ones(2, 1, 2, 2)
    terms = diffusion.training_terms(ZeroModel(), x_start, x_start, t=torch.tensor([999, 999]))
    assert terms["pred_x0"].abs().max() > 10  # x_t / sqrt(abar) with abar ~ 2e-9


def test_training_terms_are_reproducible_with_a_generator():
    diffusion = process()
    x_start = torch.zeros(8, 1, 2, 2)
    first = diffusion.training_terms(
        ZeroModel(), x_start, x_start, generator=torch.Generator().manual_seed(5)
    )
    second = diffusion.training_terms(
        ZeroModel(), x_start, x_start, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(first["t"], second["t"]) and torch.equal(first["noise"], second["noise"])


def test_training_terms_reject_a_respaced_chain_and_bad_inputs():
    diffusion = process()
    x_start = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match="full T-step process"):
        diffusion.respaced("ddim50").training_terms(ZeroModel(), x_start, x_start)
    with pytest.raises(ValueError, match="must lie in"):
        diffusion.training_terms(ZeroModel(), x_start, x_start, t=torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="LongTensor"):
        diffusion.training_terms(ZeroModel(), x_start, x_start, t=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="image batch"):
        diffusion.training_terms(ZeroModel(), x_start, torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match="model output shape"):
        diffusion.training_terms(lambda x, t, image: x[:, :, :1], x_start, x_start)


def test_unpack_model_output_accepts_tensor_or_dict_with_output():
    tensor = torch.zeros(1)
    assert unpack_model_output(tensor) == (tensor, {})
    output, extras = unpack_model_output({"output": tensor, "aux": 3})
    assert output is tensor and extras == {"aux": 3}
    with pytest.raises(KeyError, match="'output'"):
        unpack_model_output({"prediction": tensor})
    with pytest.raises(TypeError):
        unpack_model_output([tensor])


def test_constructor_rejects_invalid_configuration():
    with pytest.raises(ValueError, match="model_output"):
        GaussianDiffusion(get_beta_schedule("cosine", 10), model_output="score")
    with pytest.raises(ValueError, match="variance"):
        GaussianDiffusion(get_beta_schedule("cosine", 10), variance="learned")
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion([0.1, 1.0])
    assert GaussianDiffusion.from_schedule("linear", 100).num_timesteps == 100


def test_ddim_step_with_eta1_equals_the_posterior_step_and_eta0_is_noise_free():
    diffusion = process().respaced("ddim50")
    generator = torch.Generator().manual_seed(2)
    x_start = torch.rand(3, 1, 2, 2, generator=generator, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(3, 1, 2, 2, generator=generator, dtype=torch.float64)
    noise = torch.randn(3, 1, 2, 2, generator=generator, dtype=torch.float64)
    t = torch.tensor([1, 25, 49])
    eps = diffusion.predict_eps_from_x0(x_t, t, x_start)
    torch.testing.assert_close(
        diffusion.ddim_step(x_start, eps, t, 1.0, noise), diffusion.posterior_step(x_t, x_start, t, noise)
    )
    torch.testing.assert_close(
        diffusion.ddim_step(x_start, eps, t, 0.0, noise), diffusion.ddim_step(x_start, eps, t, 0.0, None)
    )
    alpha_bar_prev = diffusion.alphas_cumprod_prev[t].reshape(3, 1, 1, 1)
    torch.testing.assert_close(
        diffusion.ddim_step(x_start, eps, t, 0.0, None),
        alpha_bar_prev.sqrt() * x_start + (1 - alpha_bar_prev).sqrt() * eps,
    )
