"""Ridge regression with a penalty per target, chosen on validation data: pure tensor functions.

Shared by the FIR ridge baseline and the diffusion model's regression stage start (targets:
grayordinates; the model maps the solution to its latents with ``project``). The fit works from the centred Gram matrices of a design X
and targets Y, so callers can accumulate them over batches (float64 sums): with
X^T X = Q diag(λ) Q^T, the ridge solution for penalty α is W_α = Q diag(1 / (λ + α)) Q^T X^T Y,
and the whole path over a grid of α costs one eigendecomposition. Directions with λ = 0 are
dropped: X^T Y lies in the range of X^T X, so they carry nothing (this is exact, and it keeps the
cost at rank(X) when there are fewer frames than features).
"""

from __future__ import annotations

import torch
from torch import Tensor

# penalties tried on the validation frames, for standardised features (X^T X has ~n on its diagonal)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(10.0 ** (e / 2) for e in range(2, 15))  # 1e1 ... 1e7


def ridge_per_target(
    cxx: Tensor,
    cxy: Tensor,
    n: Tensor | float,
    alphas: Tensor,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    project: Tensor | None = None,
    chunk: int = 8192,
    y_center: Tensor | None = None,
    overwrite: bool = False,
) -> tuple[Tensor, Tensor]:
    """W (F, V) and α (V,): for every target v, the ridge solution on the standardised design,
    (X_s^T X_s + α_v I)^-1 X_s^T y_v with X_s = X / std (each column's training std; constant
    columns stay as they are), mapped back so that predictions are ``x @ W``; α_v is the value of
    ``alphas`` whose predictions ``x_val @ W`` have the least squared error on ``y_val``, or
    without validation data the geometric middle of ``alphas``. With ``project`` (V, d) the result
    is ``W @ project`` (F, d) instead, without W ever being held whole (a whole-brain ridge mapped
    to a few latents).

    cxx: (F, F) centred X^T X; cxy: (F, V) centred X^T Y; n: the training rows they sum over;
    alphas: (A,) positive penalties; x_val: (n_val, F) validation design centred with the
    *training* means; y_val: (n_val, V) validation targets, centred likewise, or in any dtype
    (float16 as a cache stores them) with their training means ``y_center`` (V,) subtracted here a
    chunk at a time; chunk: targets per step of the validation and projection products (bounds
    their memory); overwrite: cxy's memory holds the solution's eigenbasis form (cxy is then
    destroyed: a whole-brain fit keeps one (F, V) tensor instead of two). The eigendecomposition
    runs in float64, the (·, V) products in cxy's dtype (float32 keeps a whole-brain fit within
    memory), on the inputs' device. Why standardise every column: a penalty treats all directions
    alike only on a common scale; e.g. a 0/1 indicator that is rarely 1 would otherwise be shrunk away.
    """
    cxx, alphas = cxx.double(), alphas.to(device=cxx.device, dtype=torch.float64)
    sd = (cxx.diagonal() / n).clamp_min(0).sqrt()  # (F,)
    sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    lam, q = torch.linalg.eigh(cxx / torch.outer(sd, sd))  # (F,), (F, F) of the standardised design
    keep = lam > lam.max().clamp_min(0) * 1e-10
    lam, q = lam[keep], q[:, keep]  # (r,), (F, r)
    qs = q / sd[:, None]  # (F, r): maps the unscaled design to the eigenbasis (no scaled copy of cxy)
    r, V = qs.shape[1], cxy.shape[1]
    spans = [slice(c, min(c + chunk, V)) for c in range(0, V, chunk)]
    # the targets' cross-products in the eigenbasis, cxy's dtype: (r, V), in cxy's first r rows if allowed
    g = cxy[:r] if overwrite else cxy.new_empty(r, V)
    for c in spans:
        g[:, c] = qs.T.to(cxy.dtype) @ cxy[:, c]  # (r, b): a chunk's inputs are read before its rows are written
    if x_val is None or y_val is None or len(y_val) == 0:
        best = alphas.log().mean().exp().expand(V).clone()  # (V,)
    else:
        xq = (x_val.double() @ qs).to(g.dtype)  # (n_val, r)
        best = torch.empty(V, dtype=torch.float64, device=g.device)
        for c in spans:
            yc = y_val[:, c].to(g.dtype)  # (n_val, b)
            if y_center is not None:
                yc = yc - y_center[c].to(g.dtype)
            err = torch.stack(
                [((xq / (lam.to(g.dtype) + a)) @ g[:, c] - yc).square().sum(0) for a in alphas.tolist()]
            )  # (A, b)
            best[c] = alphas[err.argmin(0)]
    for c in spans:  # in place: (r, V) the solution in the eigenbasis
        g[:, c] /= (lam[:, None] + best[None, c]).to(g.dtype)
    if project is None:
        return qs.to(g.dtype) @ g, best  # (F, V), (V,)
    gp = sum(g[:, c] @ project[c].to(g.dtype) for c in spans)  # (r, d)
    return qs.to(g.dtype) @ gp, best  # (F, d), (V,)
