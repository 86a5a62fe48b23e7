"""EEG-conditioned Diffusion Transformer over the K frame latents of a window (paper §3).

One token per frame latent, a fixed sinusoidal encoding of the frame index, adaLN-zero
conditioning on the diffusion timestep (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), self-attention across the K frames and cross-attention from the frame tokens to
the K EEG tokens in every block. A learned null EEG token allows classifier-free guidance.

Reads top to bottom: helpers -> embedders -> block -> final layer -> model -> size registry.
Shapes: B windows, K frames, d latent dims, H hidden size, E EEG embedding dims (cond_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#################################################################################
#                                    Helpers                                    #
#################################################################################


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, with one (shift, scale) per sample broadcast over tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (B, K, H)


def sinusoidal_embedding(positions: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer sinusoids [cos(p w_i), sin(p w_i)], w_i = max_period^(-i / (dim/2)); float32.

    Used for the diffusion timestep (DDPM / DiT) and for the frame index (Vaswani et al. 2017).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    )  # (dim/2,)
    args = positions.float()[..., None] * freqs  # (..., dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (..., 2 * (dim/2))
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (..., dim)
    return emb


#################################################################################
#                                   Embedders                                   #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Diffusion timestep -> vector: sinusoids then a two-layer MLP (DiT)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: Tensor) -> Tensor:
        t_freq = sinusoidal_embedding(t, self.frequency_embedding_size)  # (B, 256)
        return self.mlp(t_freq)  # (B, H)


#################################################################################
#                                 Core DiT block                                #
#################################################################################


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``; self- or cross-."""

    def __init__(self, hidden_size: int, num_heads: int, cross: bool = False):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(hidden_size, hidden_size)
            self.kv = nn.Linear(hidden_size, 2 * hidden_size)
        else:
            self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        B, K, H = x.shape
        if self.cross:
            q = self.q(x)  # (B, K, H)
            k, v = self.kv(context).chunk(2, dim=-1)  # (B, Kc, H) x 2
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, K, H) x 3
        q, k, v = (u.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for u in (q, k, v))  # (B, h, *, H/h)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, Kc) True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, K, H/h)
        return self.proj(out.transpose(1, 2).reshape(B, K, H))  # (B, K, H)


class DiTBlock(nn.Module):
    """Self-attention over frames, cross-attention to EEG tokens, MLP; each adaLN-zero modulated by t."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.cross_attn = Attention(hidden_size, num_heads, cross=True)
        self.norm3 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_hidden, hidden_size),
        )
        # shift / scale / gate for each of the three sub-layers, regressed from the timestep
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 9 * hidden_size))

    def forward(self, x: Tensor, c: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        (shift_sa, scale_sa, gate_sa, shift_ca, scale_ca, gate_ca, shift_mlp, scale_mlp, gate_mlp) = (
            self.adaLN_modulation(c).chunk(9, dim=-1)
        )  # (B, H) x 9
        x = x + gate_sa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_sa, scale_sa))  # (B, K, H)
        x = x + gate_ca.unsqueeze(1) * self.cross_attn(
            modulate(self.norm2(x), shift_ca, scale_ca), context, context_mask
        )  # (B, K, H)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))  # (B, K, H)
        return x


#################################################################################
#                                  Final layer                                  #
#################################################################################


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a Linear back to the latent dims."""

    def __init__(self, hidden_size: int, latent_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, latent_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, H) x 2
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, K, d)


#################################################################################
#                                   DiT model                                   #
#################################################################################


class DiT(nn.Module):
    """Noise predictor eps_theta(x_n, n, h_EEG) over a window of K frame latents.

    The EEG tokens may cover more frames than the window: ``eeg_context = (P, F)`` tokens of the
    frames before and after it (P + K + F in all). Frame token k and EEG token P + k share the
    frame encoding of position P + k, so cross-attention can pair a frame with its own window and
    with the EEG of the seconds before it (the hemodynamic delay). With ``latent_cond`` every frame
    token also receives a second latent (the regression stage's mean, CorrDiff-style).

    Args:
        latent_dim: d, dims of one frame latent (the autoencoder's ``latent_dim``).
        cond_dim: dims of one EEG token (the EEG encoder's ``embed_dim``).
        n_frames: K, frames per window in training (the encoding supports any K <= max_frames).
        hidden_size: transformer width H.
        depth: number of DiT blocks.
        num_heads: attention heads (H must be divisible by it).
        mlp_ratio: MLP hidden width / H.
        max_frames: longest window (context included) the fixed frame encoding is tabulated for.
        eeg_context: (P, F), EEG tokens of frames before / after the window.
        latent_cond: embed a conditioning latent per frame token (``x_cond`` of forward).
    """

    def __init__(
        self,
        latent_dim: int = 1024,
        cond_dim: int = 512,
        n_frames: int = 10,
        hidden_size: int = 1024,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        max_frames: int = 64,
        eeg_context: tuple[int, int] = (0, 0),
        latent_cond: bool = False,
    ):
        super().__init__()
        self.before, self.after = eeg_context
        if n_frames + self.before + self.after > max_frames:
            raise ValueError(
                f"n_frames={n_frames} with eeg_context={list(eeg_context)} exceeds max_frames={max_frames}"
            )
        self.latent_dim, self.cond_dim, self.n_frames, self.max_frames = latent_dim, cond_dim, n_frames, max_frames
        self.x_embedder = nn.Linear(latent_dim, hidden_size)
        self.latent_cond_embedder = nn.Linear(latent_dim, hidden_size) if latent_cond else None
        self.cond_embedder = nn.Linear(cond_dim, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        # learned "no EEG" token for classifier-free guidance (drop_cond / cond=None)
        self.null_cond = nn.Parameter(torch.zeros(cond_dim))
        # fixed sinusoidal encoding of the frame index, shared by frame and EEG tokens so that
        # cross-attention can pair frame k with the EEG of its own window
        pos = sinusoidal_embedding(torch.arange(max_frames), hidden_size)  # (max_frames, H)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, latent_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation; adaLN-zero: every modulation and the final Linear start at zero.

        Each block is then the identity and the model outputs exactly zero at the start.
        """

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        nn.init.normal_(self.null_cond, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None,
        drop_cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
        x_cond: Tensor | None = None,
    ) -> Tensor:
        """x (B, K, d) noisy latents; t (B,) timesteps (long or float); cond (B, N, E) EEG tokens
        (N = P + K + F), or None for the null token everywhere; drop_cond (B,) bool: those samples
        use the null token (classifier-free guidance training / the unconditional half of a guided
        batch); cond_mask (B, N) bool: False for EEG tokens to ignore (context outside the clip);
        x_cond (B, K, d): the conditioning latent of ``latent_cond``.
        Returns the network output (B, K, d). No host syncs: capturable by CUDA graphs.
        """
        B, K, _ = x.shape
        N = K + self.before + self.after
        if N > self.max_frames:
            raise ValueError(f"window of {K} frames with its EEG context exceeds max_frames={self.max_frames}")
        if cond is None:
            cond = self.null_cond.expand(B, N, -1)  # (B, N, E)
        elif drop_cond is not None:
            null = self.null_cond.to(cond.dtype)  # (E,)
            cond = torch.where(drop_cond.view(B, 1, 1), null, cond)  # (B, N, E)
        if cond.shape[1] != N:
            raise ValueError(
                f"{cond.shape[1]} EEG tokens for {K} frames; expected {N} (eeg_context {self.before}, {self.after})"
            )
        h = self.x_embedder(x) + self.pos_embed[self.before : self.before + K]  # (B, K, H)
        if self.latent_cond_embedder is not None:
            h = h + self.latent_cond_embedder(x_cond)  # (B, K, H)
        context = self.cond_embedder(cond) + self.pos_embed[:N]  # (B, N, H)
        c = self.t_embedder(t)  # (B, H)
        for block in self.blocks:
            h = block(h, c, context, cond_mask)  # (B, K, H)
        return self.final_layer(h, c)  # (B, K, d)


#################################################################################
#                                 DiT configs                                   #
#################################################################################

# transformer sizes (hidden_size, depth, num_heads); "paper" is the paper's §3 model
DIT_CONFIGS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, depth=2, num_heads=4),  # tests, CI
    "small": dict(hidden_size=384, depth=6, num_heads=6),  # CPU demos
    "base": dict(hidden_size=768, depth=6, num_heads=12),
    "paper": dict(hidden_size=1024, depth=6, num_heads=8),
}
