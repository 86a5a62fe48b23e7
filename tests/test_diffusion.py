"""The diffusion math: schedule, DDIM step against hand-computed numbers, samplers, InterRecon."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eeg2fmri.diffusion import (
    alpha_bar_at,
    alphas_cumprod,
    cfg_eps,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    diffusion_loss,
    interrecon_sample,
    linear_beta_schedule,
    null_space_project,
    predict_eps,
    predict_x0,
    q_sample,
)

N = 1000
AC = alphas_cumprod(linear_beta_schedule(N))


def _python_alpha_bars() -> list[float]:
    """alpha_bar_n = prod (1 - beta_i) with beta linear from 1e-4 to 0.02, in plain Python floats."""
    out, prod = [], 1.0
    for i in range(N):
        prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / (N - 1))
        out.append(prod)
    return out


# ----------------------------------------------------------------------------- schedule


def test_schedule_matches_numpy():
    betas = linear_beta_schedule(N)
    assert betas.dtype == torch.float64 and betas.shape == (N,)
    assert betas[0].item() == 1e-4 and betas[-1].item() == 0.02
    ref_betas = np.linspace(1e-4, 0.02, N, dtype=np.float64)
    np.testing.assert_allclose(betas.numpy(), ref_betas, rtol=1e-12, atol=0)
    np.testing.assert_allclose(AC.numpy(), np.cumprod(1.0 - ref_betas), rtol=1e-12, atol=0)
    np.testing.assert_allclose(AC.numpy(), _python_alpha_bars(), rtol=1e-12, atol=0)
    assert (AC[1:] < AC[:-1]).all() and 0 < AC[-1] < AC[0] < 1
    assert alpha_bar_at(AC, torch.tensor([-1, 0, 999])).tolist() == pytest.approx(
        [1.0, AC[0].item(), AC[-1].item()], rel=1e-6
    )


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 30, 50, 1000])
def test_ddim_timesteps_properties(spacing, n):
    ts, prev = ddim_timesteps(N, n, spacing)
    assert ts.dtype == prev.dtype == torch.int64 and ts.shape == prev.shape == (n,)
    assert (ts[:-1] > ts[1:]).all(), "strictly descending, no repeats"
    assert ts.min() >= 0 and ts.max() <= N - 1
    assert torch.equal(prev[:-1], ts[1:]) and prev[-1] == -1
    if spacing == "leading":
        assert ts[-1] == 0 and torch.equal(ts.flip(0), torch.arange(n) * (N // n))
    if spacing == "trailing":
        assert ts[0] == N - 1
    if spacing == "linspace" and n > 1:  # (n = 1 gives [0], as numpy's linspace)
        assert ts[0] == N - 1 and ts[-1] == 0


def test_ddim_timesteps_known_values_and_errors():
    assert ddim_timesteps(1000, 4, "leading")[0].tolist() == [750, 500, 250, 0]
    assert ddim_timesteps(1000, 4, "trailing")[0].tolist() == [999, 749, 499, 249]
    assert ddim_timesteps(1000, 4, "linspace")[0].tolist() == [999, 666, 333, 0]
    with pytest.raises(ValueError, match="num_inference_steps"):
        ddim_timesteps(10, 11)
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(10, 5, "uniform")


# ----------------------------------------------------------------------------- one DDIM step


def test_ddim_step_hand_computed():
    ab = _python_alpha_bars()
    a_t, a_prev = ab[500], ab[480]  # t = 500 -> t_prev = 480
    x_t, eps, z = [0.3, -1.2], [0.5, 0.1], [0.7, -0.4]
    for eta in (0.0, 0.5):
        # DDIM eq. 12 / 16 written out by hand
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        want_x0 = [(x_t[i] - math.sqrt(1 - a_t) * eps[i]) / math.sqrt(a_t) for i in range(2)]
        want = [
            math.sqrt(a_prev) * want_x0[i] + math.sqrt(1 - a_prev - sigma**2) * eps[i] + sigma * z[i] for i in range(2)
        ]
        x_prev, x0 = ddim_step(
            torch.tensor(x_t), torch.tensor(eps), AC[500].item(), AC[480].item(), eta, noise=torch.tensor(z)
        )
        assert x_prev.dtype == torch.float32
        assert x0.tolist() == pytest.approx(want_x0, rel=1e-5)
        assert x_prev.tolist() == pytest.approx(want, rel=1e-5)
    # regression values (computed once from the formulas above)
    x_prev0, _ = ddim_step(torch.tensor(x_t), torch.tensor(eps), a_t, a_prev, 0.0)
    assert x_prev0.tolist() == pytest.approx([0.2767472480316855, -1.3360490841795434], rel=1e-5)
    x_prev5, _ = ddim_step(torch.tensor(x_t), torch.tensor(eps), a_t, a_prev, 0.5, noise=torch.tensor(z))
    assert x_prev5.tolist() == pytest.approx([0.4120920448435823, -1.422451791761028], rel=1e-5)
    assert ddim_sigma(a_t, a_prev, 0.5).item() == pytest.approx(0.2101327165627112, rel=1e-5)


def test_ddim_step_per_sample_alpha_bars():
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    t, t_prev = torch.tensor([900, 500, 20]), torch.tensor([880, 480, -1])
    a_t, a_prev = alpha_bar_at(AC, t), alpha_bar_at(AC, t_prev)
    x_prev, _ = ddim_step(x_t, eps, a_t, a_prev, 0.0)
    for b in range(3):
        want, _ = ddim_step(x_t[b], eps[b], a_t[b].item(), a_prev[b].item(), 0.0)
        torch.testing.assert_close(x_prev[b], want)


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_eta_one_is_ddpm_posterior_variance(t):
    ab = _python_alpha_bars()
    beta_t = 1e-4 + (0.02 - 1e-4) * t / (N - 1)
    beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * beta_t  # DDPM eq. 7
    # (rel 2e-3: at small t, 1 - a_t / a_prev ~ 1e-4 loses digits in the float32 schedule math)
    assert ddim_sigma(AC[t].item(), AC[t - 1].item(), 1.0).item() ** 2 == pytest.approx(beta_tilde, rel=2e-3)
    # and through the step itself: x_t = 0, eps = 0, z = 1 leaves exactly sigma
    x_prev, _ = ddim_step(torch.zeros(1), torch.zeros(1), AC[t].item(), AC[t - 1].item(), 1.0, noise=torch.ones(1))
    assert x_prev.item() ** 2 == pytest.approx(beta_tilde, rel=2e-3)


def test_true_eps_inverts_q_sample():
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 5, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    t = torch.full((4,), 700)
    x_t = q_sample(x0, t, noise, AC)
    a_t = alpha_bar_at(AC, t)
    torch.testing.assert_close(predict_x0(x_t, noise, a_t), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(predict_eps(x_t, x0, a_t), noise, atol=1e-5, rtol=1e-5)
    # one deterministic step straight to clean data (alpha_bar_prev = 1) recovers x0
    x_prev, _ = ddim_step(x_t, noise, a_t, 1.0, eta=0.0)
    torch.testing.assert_close(x_prev, x0, atol=1e-4, rtol=1e-4)
    # and a step to t_prev lands on the same forward trajectory (DDIM keeps the noise)
    x_480, _ = ddim_step(x_t, noise, a_t, alpha_bar_at(AC, torch.full((4,), 480)), eta=0.0)
    torch.testing.assert_close(x_480, q_sample(x0, torch.full((4,), 480), noise, AC), atol=1e-5, rtol=1e-5)


def test_given_x0_replaces_x0_and_keeps_the_model_eps():
    """DDNM's update: a given x0 (the projected x0_hat) takes the first term of eq. 12, the model's
    eps stays in the direction term, by hand; with the model's own x0 it is the plain DDIM step."""
    g = torch.Generator().manual_seed(2)
    x_t, eps, y, z = (torch.randn(2, 3, 4, generator=g) for _ in range(4))
    a_t, a_prev = AC[600].item(), AC[560].item()
    for eta in (0.0, 0.5):
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        want = math.sqrt(a_prev) * y + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
        x_prev, x0_hat = ddim_step(x_t, eps, a_t, a_prev, eta, noise=z, x0=y)
        assert torch.equal(x0_hat, y)
        torch.testing.assert_close(x_prev, want, atol=1e-6, rtol=1e-6)
    plain, x0_model = ddim_step(x_t, eps, a_t, a_prev, 0.0)
    same, _ = ddim_step(x_t, eps, a_t, a_prev, 0.0, x0=x0_model)
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=1e-6)


def test_loss_and_cfg():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    assert diffusion_loss(a, b).item() == pytest.approx(2.5)
    assert torch.equal(cfg_eps(a, b, 1.0), a) and torch.equal(cfg_eps(a, b, 0.0), b)
    assert cfg_eps(a, b, 3.0).tolist() == [3.0, -2.0]


# ----------------------------------------------------------------------------- null space


def test_null_space_projection_exact_and_general_formula():
    g = torch.Generator().manual_seed(3)
    B, K, d = 3, 6, 4
    x0, y = torch.randn(B, K, d, generator=g), torch.randn(B, K, d, generator=g)
    mask = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    out = null_space_project(x0, y, mask)
    assert torch.equal(out[mask], y[mask]) and torch.equal(out[~mask], x0[~mask])
    # the general DDNM formula A^+ y_obs + (I - A^+ A) x0 with A selecting the observed frames
    for b in range(B):
        A = torch.eye(K)[mask[b]]  # (M, K)
        A_pinv = torch.linalg.pinv(A) if len(A) else torch.zeros(K, 0)  # (K, M)
        want = A_pinv @ (A @ y[b]) + (torch.eye(K) - A_pinv @ A) @ x0[b]
        torch.testing.assert_close(out[b], want)
    with pytest.raises(TypeError, match="bool"):
        null_space_project(x0, y, mask.long())


# ----------------------------------------------------------------------------- samplers


def _random_eps_fn(K: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K * d, K * d, generator=g) / math.sqrt(K * d)
    calls = []

    def eps_fn(x, t):
        calls.append(int(t[0]))
        return torch.tanh((x.flatten(1) @ W).view_as(x) + t[:, None, None] / N)

    return eps_fn, calls


MASKS = torch.tensor(
    [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0], [1, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]],
    dtype=torch.bool,
)


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("time_travel,repeat", [(0, 1), (3, 2)])
def test_interrecon_returns_observed_frames_exactly(eta, time_travel, repeat):
    B, K, d, steps = len(MASKS), MASKS.shape[1], 3, 10
    g = torch.Generator().manual_seed(4)
    y = torch.randn(B, K, d, generator=g) * 3
    y_nan = y.masked_fill(~MASKS[..., None], float("nan"))  # values at unobserved frames are ignored
    eps_fn, calls = _random_eps_fn(K, d)
    out = interrecon_sample(
        eps_fn,
        y_nan,
        MASKS,
        AC,
        num_inference_steps=steps,
        eta=eta,
        generator=torch.Generator().manual_seed(5),
        time_travel=time_travel,
        time_travel_repeat=repeat,
    )
    assert out.shape == (B, K, d) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out[MASKS], y[MASKS])
    assert not torch.isclose(out[~MASKS], y[~MASKS]).any()
    assert len(calls) == steps + time_travel * repeat
    # time-travel repeats the first (noisiest) steps
    ts = ddim_timesteps(N, steps)[0].tolist()
    if time_travel:
        assert calls[: (repeat + 1) * time_travel] == [t for t in ts[:time_travel] for _ in range(repeat + 1)]


def test_time_travel_changes_the_fill():
    y = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(6))
    eps_fn, _ = _random_eps_fn(6, 3)
    outs = [
        interrecon_sample(eps_fn, y, MASKS[:2], AC, 10, generator=torch.Generator().manual_seed(7), time_travel=tt)
        for tt in (0, 3)
    ]
    assert not torch.allclose(outs[0], outs[1])
    assert torch.equal(outs[0][MASKS[:2]], outs[1][MASKS[:2]])


def test_ddim_eta0_deterministic():
    eps_fn, _ = _random_eps_fn(4, 2)
    x_T = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(8))
    a = ddim_sample(eps_fn, (3, 4, 2), AC, 10, x_T=x_T)
    b = ddim_sample(eps_fn, (3, 4, 2), AC, 10, x_T=x_T.clone())
    assert torch.equal(a, b)
    c = ddim_sample(eps_fn, (3, 4, 2), AC, 10, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(9))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_samples_a_gaussian(eta):
    """With the exact eps of x0 ~ N(mu, s^2) the sampler's output distribution is known in closed form.

    For Gaussian data, E[eps | x_t] is linear in u_t = x_t - sqrt(a_t) mu, and one DDIM step maps
    u_t to f u_t + sigma z with f = (sqrt(a_prev a_t) s^2 + sqrt((1 - a_prev - sigma^2)(1 - a_t))) / v_t,
    v_t = a_t s^2 + 1 - a_t; so the output is mu + u_0 with a mean and variance we can iterate here.
    (With few steps DDIM under-disperses slightly, Cauchy-Schwarz; with many it tends to s^2.)
    """
    mu, s = 1.5, 0.5

    def eps_fn(x, t):
        a = alpha_bar_at(AC, t)[:, None, None]
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s**2 + 1 - a)  # E[eps | x_t]

    ts, prev = ddim_timesteps(N, 50)
    ac = AC.tolist()
    mean_u, var_u = -math.sqrt(ac[ts[0]]) * mu, 1.0  # u_T = x_T - sqrt(a_T) mu, x_T ~ N(0, 1)
    for t, t_prev in zip(ts.tolist(), prev.tolist()):
        a_t, a_p = ac[t], (ac[t_prev] if t_prev >= 0 else 1.0)
        sigma2 = eta**2 * (1 - a_p) / (1 - a_t) * (1 - a_t / a_p)
        v = a_t * s**2 + 1 - a_t
        f = (math.sqrt(a_p * a_t) * s**2 + math.sqrt(max(1 - a_p - sigma2, 0) * (1 - a_t))) / v
        mean_u, var_u = f * mean_u, f**2 * var_u + sigma2
    assert abs(math.sqrt(var_u) - s) < 0.06  # close to the data distribution ...
    out = ddim_sample(eps_fn, (4000, 4, 1), AC, 50, eta=eta, generator=torch.Generator().manual_seed(10))
    assert out.mean().item() == pytest.approx(mu + mean_u, abs=0.015)  # ... and exactly what DDIM gives
    assert out.std().item() == pytest.approx(math.sqrt(var_u), abs=0.008)


def test_interrecon_errors():
    y = torch.zeros(2, 4, 3)
    eps_fn, _ = _random_eps_fn(4, 3)
    none = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"window\(s\) \[1\] have no observed frame.*ddim_sample"):
        interrecon_sample(eps_fn, y, none, AC, 2)
    full = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match=r"window\(s\) \[0\] have every frame observed: nothing to fill"):
        interrecon_sample(eps_fn, y, full, AC, 2)
    with pytest.raises(ValueError, match="observed_mask has shape"):
        interrecon_sample(eps_fn, y, none[:, :3], AC, 2)
    with pytest.raises(ValueError, match="both y and observed_mask"):
        ddim_sample(eps_fn, (2, 4, 3), AC, 2, y=y)
    # the plain sampler and the projection accept any mask, empty or full
    out = ddim_sample(eps_fn, (2, 4, 3), AC, 2, y=y, observed_mask=full)
    assert torch.equal(out[full], y[full])


def test_eps_from_v_is_a_skip_parameterisation_of_the_eps_loss():
    """eps_hat = sqrt(1-a) x_t + sqrt(a) v_hat: the eps-loss equals a |v - v_hat|^2, and the
    implied x0 at high noise is -v_hat (bounded), not an amplified eps error."""
    from eeg2fmri.diffusion import eps_from_v, predict_x0

    g = torch.Generator().manual_seed(0)
    x0, eps, v_hat = (torch.randn(4, 3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    a = torch.tensor([0.9, 0.5, 0.1, 1e-4], dtype=torch.float64)
    ab = a.view(-1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    eps_hat = eps_from_v(x_t, v_hat, a.float()).double()
    lhs = ((eps - eps_hat) ** 2).mean(dim=(1, 2))
    rhs = a * ((v - v_hat) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-6)
    # the exact v gives the exact eps
    torch.testing.assert_close(eps_from_v(x_t, v, a.float()).double(), eps, rtol=1e-5, atol=1e-5)
    # zero network output at high noise: x0 estimate near 0 (the data mean), not x_t / sqrt(a)
    x0_hat = predict_x0(x_t[3:], eps_from_v(x_t[3:], torch.zeros_like(v_hat[3:]), a[3:].float()), a[3:].float())
    assert x0_hat.abs().max() < 0.05
