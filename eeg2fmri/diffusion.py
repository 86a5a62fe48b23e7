"""Diffusion math as pure tensor functions: schedule, forward process, DDIM, null-space InterRecon.

No ``nn.Module`` state and no Lightning: every function takes tensors (and the schedule) and
returns tensors, so the training step, the validation callbacks, ``eeg2fmri fill`` and the tests
all share one implementation. The numbered steps in the comments map to the equations of

- DDPM: Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (forward process, eq. 4;
  posterior variance beta_tilde, eq. 7; epsilon-prediction loss, eq. 14),
- DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models" (the generalised step, eq. 12;
  sigma_t(eta), eq. 16),
- DDNM: Wang et al. 2023, "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model"
  (range/null-space decomposition x0_hat = A^+ y + (I - A^+ A) x0|t, eq. 13; time-travel, sec. 3.3),
  which the paper's InterRecon (Algorithm 1) applies with A = "select the observed frames".

Conventions: timesteps are integers 0 .. num_train_timesteps - 1; ``alpha_bar`` is the cumulative
product of (1 - beta) at a timestep, and timestep -1 means "before the first step", alpha_bar = 1
(the "final alpha" of a DDIM schedule that ends on clean data). Latents are (B, K, d): B windows of
K frames with d latent dims. The schedule math runs in float32 on the device of the inputs, even
under autocast; the noise-prediction function given to the samplers may run in bf16.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Spacing = Literal["leading", "trailing", "linspace"]
EpsFn = Callable[[Tensor, Tensor], Tensor]  # eps_fn(x_t (B, K, d), t (B,) long) -> eps (B, K, d)


#################################################################################
#                                   Schedule                                    #
#################################################################################


def linear_beta_schedule(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear variance schedule (Ho et al. 2020, sec. 4): betas (N,) float64."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)  # (N,)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """alpha_bar_n = prod_{i <= n} (1 - beta_i), same dtype as ``betas`` (float64 by default)."""
    return torch.cumprod(1.0 - betas, dim=0)  # (N,)


def alpha_bar_at(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """alpha_bar at integer timesteps ``t`` (any shape), float32; t = -1 gives 1 (clean data)."""
    ac = alphas_cumprod.to(device=t.device, dtype=torch.float32)  # (N,)
    a = ac[t.long().clamp(min=0)]  # t.shape
    return torch.where(t >= 0, a, torch.ones_like(a))  # t.shape


def _bcast(a: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or per-sample (B,) schedule value as float32, shaped to broadcast against x (B, ...)."""
    a = torch.as_tensor(a, dtype=torch.float32, device=x.device)
    if a.ndim == 1:
        a = a.view(-1, *([1] * (x.ndim - 1)))  # (B, 1, ..., 1)
    return a


#################################################################################
#                          Forward process and the loss                         #
#################################################################################


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Sample q(x_t | x_0) (DDPM eq. 4): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, with a_t = alpha_bar_t.

    ``t`` is (B,) integer timesteps; x0 and noise are (B, ...). Returns float32.
    """
    a = _bcast(alpha_bar_at(alphas_cumprod, t.to(x0.device)), x0)  # (B, 1, 1)
    return a.sqrt() * x0.float() + (1.0 - a).sqrt() * noise.float()  # (B, K, d)


def predict_x0(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """x0 implied by x_t and a noise estimate (DDIM eq. 9): (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    a = _bcast(alpha_bar_t, x_t)
    return (x_t.float() - (1.0 - a).sqrt() * eps.float()) / a.sqrt()  # (B, K, d)


def predict_eps(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """The noise implied by x_t and an x0 estimate: (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)."""
    a = _bcast(alpha_bar_t, x_t)
    return (x_t.float() - a.sqrt() * x0.float()) / (1.0 - a).sqrt()  # (B, K, d)


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar_t: Tensor | float) -> Tensor:
    """The noise estimate of a network that predicts v = sqrt(a_t) eps - sqrt(1 - a_t) x0
    (Salimans & Ho 2022): eps = sqrt(1 - a_t) x_t + sqrt(a_t) v.

    Used as a preconditioning of the eps-predictor: trained with the same eps-loss, whose value
    is a_t |v - v_hat|^2. Its x0 estimate, sqrt(a_t) x_t - sqrt(1 - a_t) v_hat, stays bounded at
    high noise (x0 = -v_hat as a_t -> 0), where a plain eps-network's error is amplified by
    1 / sqrt(a_t) (100x at t = 950 of the linear schedule) and DDIM drifts off the data.
    """
    a = _bcast(alpha_bar_t, x_t)
    return (1.0 - a).sqrt() * x_t.float() + a.sqrt() * v.float()  # (B, K, d)


def diffusion_loss(eps_pred: Tensor, eps: Tensor) -> Tensor:
    """The simplified epsilon-prediction objective ||eps - eps_theta(x_n, n, h)||^2 (DDPM eq. 14)."""
    return F.mse_loss(eps_pred.float(), eps.float())


#################################################################################
#                                     DDIM                                      #
#################################################################################


def ddim_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: Spacing = "leading"
) -> tuple[Tensor, Tensor]:
    """The DDIM sub-sequence of timesteps, descending, and the previous timestep of each.

    - ``leading``: 0, r, 2r, ... with r = N // n (DDIM's "uniform" skip; diffusers' default);
      the noisiest step is (n - 1) r, so the chain never starts at pure noise when r > 1.
    - ``trailing``: N - 1, N - 1 - N/n, ... (rounded): starts at the last training step
      (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    - ``linspace``: n points from 0 to N - 1, rounded.

    Returns ``(timesteps, prev_timesteps)``, both (n,) int64: ``prev_timesteps[i]`` is
    ``timesteps[i + 1]``, and -1 for the last step, meaning alpha_bar_prev = 1 (the chain ends on
    clean data, diffusers' ``set_alpha_to_one``).
    """
    n_train, n = num_train_timesteps, num_inference_steps
    if not 1 <= n <= n_train:
        raise ValueError(f"num_inference_steps={n} must be between 1 and num_train_timesteps={n_train}")
    if spacing == "leading":
        ts = torch.arange(n, dtype=torch.float64) * (n_train // n)
    elif spacing == "trailing":
        ts = (n_train - torch.arange(n, dtype=torch.float64) * (n_train / n)).round() - 1
    elif spacing == "linspace":
        ts = torch.linspace(0, n_train - 1, n, dtype=torch.float64).round()
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    ts = ts.long().sort(descending=True).values  # (n,)
    prev = torch.cat([ts[1:], ts.new_full((1,), -1)])  # (n,)
    return ts, prev


def ddim_sigma(alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float, eta: float) -> Tensor:
    """DDIM eq. 16: sigma_t = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev).

    eta = 0 is the deterministic DDIM; eta = 1 with a_prev = alpha_bar_{t-1} is DDPM's posterior
    standard deviation sqrt(beta_tilde_t).
    """
    a_t = torch.as_tensor(alpha_bar_t, dtype=torch.float32)
    a_prev = torch.as_tensor(alpha_bar_prev, dtype=torch.float32, device=a_t.device)
    return eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).clamp(min=0).sqrt()


def ddim_step(
    x_t: Tensor,
    eps: Tensor,
    alpha_bar_t: Tensor | float,
    alpha_bar_prev: Tensor | float,
    eta: float,
    noise: Tensor | None = None,
    x0: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM step x_t -> x_prev (Song et al. 2021, eq. 12). Returns ``(x_prev, x0_hat)`` in float32.

    ``alpha_bar_t`` / ``alpha_bar_prev`` are scalars or per-sample (B,) values; ``noise`` is the z of
    the stochastic term (drawn with ``randn_like`` when eta > 0 and it is not given).

    If ``x0`` is given (InterRecon's projected x0_hat) it replaces the model's x0 estimate in the
    first term, and the direction term keeps the model's eps: DDNM's update (its reference code),
    x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps_theta + sigma z. Why not the noise
    re-derived from x_t and x0_hat (observed frames kept on a forward trajectory of their data; with
    eta = 1 the DDPM posterior q(x_prev | x_t, x0_hat) that DDNM's paper writes): on a Gaussian prior
    with the exact denoiser, that update's mean of samples stays at a quarter to a half of the
    missing frames' conditional mean at any number of steps, with up to three times its variance,
    while this one converges to both (tests/test_interrecon.py, notes/interrecon.md).
    """
    x_t = x_t.float()
    a_t, a_prev = _bcast(alpha_bar_t, x_t), _bcast(alpha_bar_prev, x_t)  # (B, 1, 1) or ()
    eps = eps.float()  # (B, K, d)
    # 1. predicted x0 (eq. 12, first term; eq. 9): x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    # 2. or a given x0 (InterRecon's projected x0_hat, DDNM eq. 13) in its place; eps stays the model's
    x0_hat = predict_x0(x_t, eps, a_t) if x0 is None else x0.float()  # (B, K, d)
    # 3. sigma_t (eq. 16)
    sigma = ddim_sigma(a_t, a_prev, eta)  # (B, 1, 1) or ()
    # 4. direction pointing to x_t (eq. 12, second term): sqrt(1 - a_prev - sigma^2) eps
    direction = (1.0 - a_prev - sigma**2).clamp(min=0).sqrt() * eps  # (B, K, d)
    # 5. x_prev = sqrt(a_prev) x0_hat + direction + sigma z (eq. 12, third term: random noise)
    x_prev = a_prev.sqrt() * x0_hat + direction  # (B, K, d)
    if eta > 0:
        z = torch.randn_like(x_t) if noise is None else noise.float()  # (B, K, d)
        x_prev = x_prev + sigma * z  # (B, K, d)
    return x_prev, x0_hat


def clip_x0(eps_fn: EpsFn, bound: Tensor, alphas_cumprod: Tensor) -> EpsFn:
    """``eps_fn`` whose x̂₀ is clipped to [-bound, bound] per latent dim (diffusers' ``clip_sample``).

    The noise estimate is re-derived from x_t and the clipped x̂₀, so a DDIM step taken with it is
    the step of a denoiser that predicted the clipped x̂₀. Why: an ε-network's x̂₀ at high noise is
    (x_t − sqrt(1 − ᾱ) ε̂) / sqrt(ᾱ), its error amplified by 1/sqrt(ᾱ) (≈ 100 at the noisiest DDIM-50
    step); an under-trained network then sends x̂₀ far outside anything it saw in training, and the
    chain drifts there. ``bound`` (d,) is the largest |value| per dim of the training targets.
    """
    ac = alphas_cumprod.float()

    def clipped(x_t: Tensor, t: Tensor) -> Tensor:
        eps = eps_fn(x_t, t).float()  # (B, K, d)
        a_t = ac.to(x_t.device)[t].view(-1, *([1] * (x_t.dim() - 1)))  # (B, 1, 1)
        b = bound.to(device=x_t.device, dtype=torch.float32)  # (d,)
        x0 = predict_x0(x_t, eps, a_t).clamp(-b, b)  # (B, K, d)
        return predict_eps(x_t, x0, a_t)  # (B, K, d)

    return clipped


def renoise(x_prev: Tensor, alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float, noise: Tensor) -> Tensor:
    """Go back up the chain, q(x_t | x_prev) for t > t_prev (DDNM's time-travel, sec. 3.3).

    The forward process from t_prev to t is Gaussian with mean sqrt(a_t / a_prev) x_prev and
    variance 1 - a_t / a_prev (the product of the (1 - beta) between them).
    """
    ratio = _bcast(alpha_bar_t, x_prev) / _bcast(alpha_bar_prev, x_prev)  # (B, 1, 1) or ()
    return ratio.sqrt() * x_prev.float() + (1.0 - ratio).sqrt() * noise.float()  # (B, K, d)


def cfg_eps(eps_cond: Tensor, eps_uncond: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): eps_u + s (eps_c - eps_u); s = 1 is plain conditional."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)  # (B, K, d)


#################################################################################
#                          Null-space projection (InterRecon)                   #
#################################################################################


def null_space_project(x0: Tensor, y: Tensor, observed_mask: Tensor) -> Tensor:
    """InterRecon's projection (paper Algorithm 1; DDNM eq. 13): x0_hat = A^+ y + (I - A^+ A) x0.

    A selects the observed frames of a window: with M observed frames A is the (M x K) matrix of
    rows e_k^T (k observed), acting on every latent dim. Its rows are orthonormal, so A^+ = A^T,
    A^+ y puts the observed values at their frames (zero elsewhere) and A^+ A = diag(mask). The
    projection is therefore the frame-wise choice ``where(mask, y, x0)``: observed frames are
    replaced by y bit-exactly (range space), the others keep the model's x0 (null space), with
    no matrix built. Any mask is allowed here (none or all observed included); values of y at
    unobserved frames are ignored.

    x0, y: (B, K, d); observed_mask: (B, K) or (K,) bool.
    """
    if observed_mask.dtype != torch.bool:
        raise TypeError(f"observed_mask must be a bool tensor, got {observed_mask.dtype}")
    mask = observed_mask.to(x0.device).unsqueeze(-1)  # (B, K, 1)
    return torch.where(mask, y.to(device=x0.device, dtype=x0.dtype), x0)  # (B, K, d)


#################################################################################
#                                    Samplers                                   #
#################################################################################


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    shape: tuple[int, ...],
    alphas_cumprod: Tensor,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    spacing: Spacing = "leading",
    y: Tensor | None = None,
    observed_mask: Tensor | None = None,
    time_travel: int = 0,
    time_travel_repeat: int = 1,
    device: torch.device | str | None = None,
) -> Tensor:
    """DDIM sampling from x_T ~ N(0, I) to x0; returns the final x0 (B, K, d) float32.

    ``eps_fn(x_t, t)`` is called with x_t (B, K, d) float32 and t (B,) int64 and returns the noise
    estimate (it may run under autocast; guidance is its business, see :func:`cfg_eps`).

    With ``y`` (B, K, d) and ``observed_mask`` (B, K) bool this is InterRecon: at every step the
    model's x0 is projected with :func:`null_space_project` before the DDIM update, and the
    returned x0 equals y exactly at observed frames. Any mask is accepted here (per sample, any
    subset); :func:`interrecon_sample` is the checked entry point.

    Time-travel (DDNM sec. 3.3, RePaint's resampling): for each of the first ``time_travel``
    steps, i.e. the noisiest ones, after the step t -> t_prev the sample is sent back to t with
    q(x_t | x_t_prev) and the step is redone, ``time_travel_repeat`` times, so such a step costs
    1 + time_travel_repeat calls of eps_fn. Why the first steps: that is where the coarse content
    of the unobserved frames is decided, and repeating lets it harmonise with the projected
    anchors; the late steps only refine detail. time_travel = 0 turns it off.

    The device is ``device``, else that of x_T, else y, else ``alphas_cumprod``; ``generator``
    (on that device) draws x_T, the eta noise and the time-travel noise.
    """
    if time_travel < 0 or time_travel_repeat < 0:
        raise ValueError(f"time_travel={time_travel} and time_travel_repeat={time_travel_repeat} must be >= 0")
    if (y is None) != (observed_mask is None):
        raise ValueError("InterRecon needs both y and observed_mask (or neither for plain DDIM)")
    if device is None:
        device = next((v.device for v in (x_T, y) if v is not None), alphas_cumprod.device)
    device = torch.device(device)
    ac = alphas_cumprod.to(device=device, dtype=torch.float32)  # (N,)
    timesteps, prev_timesteps = ddim_timesteps(len(ac), num_inference_steps, spacing)

    def randn() -> Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)  # (B, K, d)

    x = randn() if x_T is None else x_T.to(device=device, dtype=torch.float32)  # (B, K, d)
    if y is not None:
        y = y.to(device=device, dtype=torch.float32)  # (B, K, d)
        observed_mask = observed_mask.to(device)  # (B, K)
    one = torch.ones((), device=device)

    def step(x_t: Tensor, t: int, a_t: Tensor, a_prev: Tensor) -> Tensor:
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)  # (B,)
        eps = eps_fn(x_t, t_batch).float()  # (B, K, d)
        x0 = None
        if y is not None:
            # InterRecon (Algorithm 1): x0_hat = A^+ y + (I - A^+ A) x0|t, then the DDIM update
            x0 = null_space_project(predict_x0(x_t, eps, a_t), y, observed_mask)  # (B, K, d)
        noise = randn() if eta > 0 else None
        return ddim_step(x_t, eps, a_t, a_prev, eta, noise=noise, x0=x0)[0]  # (B, K, d)

    for i, (t, t_prev) in enumerate(zip(timesteps.tolist(), prev_timesteps.tolist())):
        a_t, a_prev = ac[t], (ac[t_prev] if t_prev >= 0 else one)  # ()
        n_back = time_travel_repeat if i < time_travel else 0
        for _ in range(n_back):
            # time-travel: step down, then back up with q(x_t | x_prev), and redo the step
            x = renoise(step(x, t, a_t, a_prev), a_t, a_prev, randn())  # (B, K, d)
        x = step(x, t, a_t, a_prev)  # (B, K, d)
    # the last step ends at alpha_bar_prev = 1 and sigma = 0, so x is the (projected) x0_hat;
    # project once more so observed frames are bit-exact whatever the arithmetic did
    if y is not None:
        x = null_space_project(x, y, observed_mask)  # (B, K, d)
    return x


def interrecon_sample(
    eps_fn: EpsFn,
    y: Tensor,
    observed_mask: Tensor,
    alphas_cumprod: Tensor,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    spacing: Spacing = "leading",
    time_travel: int = 0,
    time_travel_repeat: int = 1,
) -> Tensor:
    """InterRecon (paper Algorithm 1): fill the unobserved frames of each window, keep the observed.

    y: (B, K, d) latents (values at unobserved frames ignored); observed_mask: (B, K) bool, any
    subset of frames per window as long as each window has at least one observed and one missing
    frame. Returns x0 (B, K, d) with observed frames equal to y exactly.
    """
    if observed_mask.dtype != torch.bool:
        raise TypeError(f"observed_mask must be a bool tensor, got {observed_mask.dtype}")
    if observed_mask.shape != y.shape[:2]:
        raise ValueError(
            f"observed_mask has shape {tuple(observed_mask.shape)}; expected (windows, frames) = "
            f"{tuple(y.shape[:2])} to match y of shape {tuple(y.shape)}"
        )
    n_observed = observed_mask.sum(dim=1)  # (B,)
    empty = (n_observed == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"window(s) {empty} have no observed frame: nothing to anchor InterRecon; "
            "use ddim_sample for unconditional reconstruction"
        )
    full = (n_observed == observed_mask.shape[1]).nonzero().flatten().tolist()
    if full:
        raise ValueError(f"window(s) {full} have every frame observed: nothing to fill")
    return ddim_sample(
        eps_fn,
        tuple(y.shape),
        alphas_cumprod,
        num_inference_steps,
        eta,
        generator,
        x_T,
        spacing,
        y=y,
        observed_mask=observed_mask,
        time_travel=time_travel,
        time_travel_repeat=time_travel_repeat,
    )
