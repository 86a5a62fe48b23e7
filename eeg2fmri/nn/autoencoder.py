"""Per-frame linear autoencoder between grayordinates and diffusion latents (paper §3).

z_k = E x_k, x_hat_k = D z_k with d = ``latent_dim`` (1024 in the paper; 512 / 2048 in ablation S4),
trained jointly with the diffusion loss and a reconstruction loss. Shapes: V grayordinates
(``n_vertices``), d latent dims; any leading dims (B, K, ...) are frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LinearAutoencoder(nn.Module):
    """Linear encoder E (V -> d) and decoder D (d -> V), with latents normalised to unit scale.

    Latent normalisation (why it lives here): the diffusion prior is trained on ``encode(x)``,
    and the noise schedule assumes unit-variance data. A non-affine BatchNorm over the latent
    dims, with statistics over every frame of the batch, makes the latents zero-mean and
    unit-variance per dim. Because those batch statistics are part of the graph, the encoder
    cannot make noise prediction trivial by shrinking its latents towards zero (the collapse a
    jointly trained autoencoder otherwise finds: tiny z makes x_n almost pure noise and the
    eps-loss almost zero): any rescaling of E is divided out. The reconstruction loss through
    ``decode`` keeps the normalised latents informative, so they do not collapse either.
    (Exact up to BatchNorm's eps = 1e-5: the pull towards shrinking is O(eps / var) per dim, and
    the initialisation below starts the pre-normalisation variance near 1.)

    ``decode`` applies D to the normalised latents directly: the decoder is one fixed function of
    z in training and evaluation alike, so latents sampled by the diffusion model (unit scale, like
    the training latents) decode exactly as training reconstructions did. An earlier version
    un-normalised with BatchNorm's running statistics before D; while the encoder's scale moved
    during training those statistics lagged the batch statistics, and the reconstruction loss
    grew instead of falling (seen on the simulator at V = 91,282). BatchNorm's running statistics
    are used only to encode in evaluation mode (InterRecon's observed frames).

    Args:
        n_vertices: V, grayordinates per frame (91,282 for the whole brain, or a region's count).
        latent_dim: d, dims of one frame latent.
    """

    def __init__(self, n_vertices: int, latent_dim: int = 1024):
        super().__init__()
        self.n_vertices, self.latent_dim = n_vertices, latent_dim
        self.encoder = nn.Linear(n_vertices, latent_dim)
        self.decoder = nn.Linear(latent_dim, n_vertices)
        self.norm = nn.BatchNorm1d(latent_dim, affine=False)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """E with i.i.d. N(0, 1/V) rows, D = E^T, zero biases.

        For V >> d random rows are nearly orthonormal, so D E is close to the orthogonal
        projection onto a random d-dim subspace: reconstruction starts at the best a random
        subspace allows instead of at noise. For data z-scored per grayordinate, E x has
        expected variance 1 per dim, matching BatchNorm's initial running statistics.
        (A QR-orthogonal init of a 1024 x 91,282 matrix would cost seconds for little gain.)
        """
        nn.init.normal_(self.encoder.weight, std=1.0 / math.sqrt(self.n_vertices))
        self.decoder.weight.copy_(self.encoder.weight.T)
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.bias)

    @torch.no_grad()
    def init_from_data(self, x: Tensor, seed: int = 0, block: int = 8192) -> None:
        """Start at the best linear autoencoder of ``x`` (N, V): PCA.

        E's rows are the top principal axes u_i of the frames (centred by E's bias), so the latents
        are the leading spatial modes; BatchNorm's running statistics start at their mean 0 and
        variance s_i^2, and D = [u_i s_i] maps the normalised latents back (D's bias is the mean
        frame), so decode(encode(x)) is the rank-d PCA reconstruction from the first step. A random
        start wastes most of a short training run finding these modes, and the diffusion prior then
        learns on latents that carry little of the frames' temporal structure (seen on the
        simulator). Axes beyond min(N - 1, d) keep their random encoder rows and start with zero
        decoder columns. ``seed`` fixes the randomised SVD (:func:`principal_axes`); ``x`` may be
        float16 (the cache's frames): it is read in ``block`` columns at a time, never copied whole.
        """
        n, d = x.shape[0], self.latent_dim
        q = min(d, n - 1, x.shape[1])
        if q < 1:
            return
        mean, s, v = principal_axes(x, q, seed=seed, block=block)  # (V,), (q,), (V, q)
        scale = s / math.sqrt(max(n - 1, 1))  # (q,) std of each mode
        # computed where x lives (the GPU during fit), copied to wherever the weights are (copy_
        # crosses devices: Lightning's setup hook runs before the module moves to the accelerator)
        self.encoder.weight[:q].copy_(v.T)
        w = self.encoder.weight.to(x.device)  # (d, V) random rows beyond q
        self.encoder.bias.copy_(-(w @ mean))  # centre every latent
        self.norm.running_mean.zero_()
        self.norm.running_var[:q].copy_(scale**2)
        self.decoder.weight[:, :q].copy_(v * scale)  # (V, q)
        self.decoder.weight[:, q:] = 0.0
        self.decoder.bias.copy_(mean)

    @torch.no_grad()
    def latent_map(self) -> tuple[Tensor, Tensor]:
        """The affine map of ``encode`` in evaluation mode, z = x @ A^T + c: A (d, V), c (d,)
        (the encoder followed by BatchNorm's running statistics)."""
        s = (self.norm.running_var + self.norm.eps).sqrt()  # (d,)
        return self.encoder.weight / s[:, None], (self.encoder.bias - self.norm.running_mean) / s

    def encode(self, x: Tensor) -> Tensor:
        """x (..., V) -> normalised latents z (..., d), float32 (batch statistics in training mode)."""
        h = self.encoder(x)  # (..., d)
        # statistics in float32 even under bf16 autocast
        z = self.norm(h.reshape(-1, self.latent_dim).float())  # (N, d), N = all frames of the batch
        return z.reshape(h.shape)  # (..., d)

    def decode(self, z: Tensor) -> Tensor:
        """z (..., d) normalised latents -> x_hat (..., V)."""
        return self.decoder(z)  # (..., V)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (..., V) -> (z (..., d), x_hat (..., V))."""
        z = self.encode(x)  # (..., d)
        return z, self.decode(z)


def held_out_variance(z_held_out: Tensor, window: int = 8, floor: float = 0.25) -> tuple[Tensor, int]:
    """Which latent dims of a PCA start generalise: the variance of each normalised latent dim on
    held-out frames ``z_held_out`` (N, d) (encoded in evaluation mode, so 1 is the training
    variance), and the number of leading dims before the first run of ``window`` consecutive dims
    that all keep less than ``floor`` of it.

    Why: with fewer training frames than grayordinates, the trailing principal axes of the
    training frames are directions of their own noise, and the in-sample variance along them is
    inflated several times over what new frames show. Normalised to unit variance they look like
    signal to the diffusion prior, which then learns training-specific noise, white in time: its
    samples carry too much of it and it couples the frames of a window weakly (InterRecon).
    Returns (ratio (d,), suggested latent_dim).
    """
    ratio = z_held_out.float().var(0)  # (d,)
    d = ratio.numel()
    w = min(window, d)
    run_max = ratio.unfold(0, w, 1).amax(1)  # (d - w + 1,) the largest ratio of each run of w dims
    low = torch.nonzero(run_max < floor)
    return ratio, (int(low[0]) if len(low) else d)


@torch.no_grad()
def principal_axes(
    x: Tensor, q: int, niter: int = 4, seed: int = 0, block: int = 8192
) -> tuple[Tensor, Tensor, Tensor]:
    """The mean frame (V,), the top ``q`` singular values (q,) and right singular vectors (V, q) of
    the centred frames x − mean, x (N, V) with N < V, all float32: the randomised SVD of Halko,
    Martinsson & Tropp (2011, Algorithms 4.4 and 5.1: ``niter`` power iterations with QR in
    between), the steps and random draws of ``torch.svd_lowrank(x - mean, q, niter)`` under
    ``torch.manual_seed(seed)``, so the two agree to float rounding, up to the sign of each axis
    (fixed here: the largest loading of each axis is positive).

    Why not svd_lowrank itself: it needs x − mean as one float32 tensor, and the caller's float16
    frames then cost three times their size (at 4,096 frames of 91,282 grayordinates, 0.75 GB
    float16 becomes 1.5 GB float32 plus 1.5 GB centred). Here every product with the centred frames
    reads ``block`` columns at a time, converted and centred on the fly; the largest tensors are
    the (V, q) bases.
    """
    n, V = x.shape
    spans = [slice(c, min(c + block, V)) for c in range(0, V, block)]
    mean = torch.cat([x[:, c].float().mean(0) for c in spans])  # (V,)

    def centred(c: slice) -> Tensor:
        return x[:, c].float() - mean[c]  # (N, b)

    def times(m: Tensor) -> Tensor:  # (x - mean) @ m: (V, k) -> (N, k)
        out = torch.zeros(n, m.shape[1], device=x.device)  # (N, k)
        for c in spans:
            out.addmm_(centred(c), m[c])
        return out

    def t_times(m: Tensor) -> Tensor:  # (x - mean)^T @ m: (N, k) -> (V, k)
        out = torch.empty(V, m.shape[1], device=x.device)  # (V, k)
        for c in spans:
            torch.mm(centred(c).T, m, out=out[c])
        return out

    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        torch.manual_seed(seed)
        r = torch.randn(n, q, device=x.device)  # (N, q) the random test matrix
    basis = torch.linalg.qr(t_times(r)).Q  # (V, q) range of (x - mean)^T
    for _ in range(niter):  # power iterations sharpen the basis towards the top singular vectors
        basis = torch.linalg.qr(t_times(torch.linalg.qr(times(basis)).Q)).Q  # (V, q)
    u, s, _ = torch.linalg.svd(times(basis).T, full_matrices=False)  # (q, q), (q,): of basis^T (x - mean)^T
    v = basis @ u  # (V, q)
    # a singular vector's sign is arbitrary, and float rounding (another BLAS, block size or device)
    # can flip it: fix it so that each axis's largest loading is positive
    sign = v.gather(0, v.abs().argmax(0, keepdim=True)).sign()  # (1, q)
    return mean, s, v.mul_(torch.where(sign == 0, 1.0, sign))  # (V,), (q,), (V, q)
