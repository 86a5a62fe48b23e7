"""The floors: FLOPs and bytes of one training step (and of sampling), counted from the model's dimensions.

FLOPs: matrix products and convolutions (elementwise work ignored), equal to what
``torch.utils.flop_counter`` counts (tests/test_bench.py). Bytes: the fewest one step must move.
Each over the device's measured ceiling (:mod:`.device`) gives a time no implementation can beat.
"""

from __future__ import annotations

from eeg2fmri.experiments.bench.scales import N_CHANS, N_TIMES, SAMPLER_STEPS


def _conv_lengths(n_times: int, n_blocks: int, kernel_size: int = 7) -> list[int]:
    """Output length of each stride-2 "same"-padded block of the EEG encoder."""
    out, t = [], n_times
    for _ in range(n_blocks):
        t = (t + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
        out.append(t)
    return out


def eeg_encoder_flops(frames: int, hp: dict, n_chans: int, n_times: int, kernel_size: int = 7) -> list[int]:
    """Forward FLOPs of each layer of the EEG encoder on ``frames`` frame windows (convs, then MLP)."""
    F_, E = hp["eeg_channels"], hp["eeg_embed_dim"]
    layers = []
    for i, t_out in enumerate(_conv_lengths(n_times, hp["eeg_blocks"], kernel_size)):
        c_in = n_chans if i == 0 else F_
        layers.append(2 * frames * F_ * c_in * kernel_size * t_out)
    layers.append(2 * frames * (F_ * E + E * E))  # the two-layer MLP
    return layers


def dit_forward_flops(B: int, K: int, hp: dict, freq_dim: int = 256) -> int:
    """Forward FLOPs of the DiT on B windows of K frame tokens and K EEG tokens."""
    d, E, H, depth = hp["latent_dim"], hp["eeg_embed_dim"], hp["hidden_size"], hp["depth"]
    M, N = int(H * hp["mlp_ratio"]), B * K
    linear = 2 * N * H * (3 * H + H)  # self-attention qkv + proj
    linear += 2 * N * H * (H + 2 * H + H)  # cross-attention q, kv (on the K EEG tokens), proj
    linear += 2 * N * H * M * 2  # MLP
    linear += 2 * B * H * 9 * H  # adaLN modulation, once per window
    attention = 2 * 2 * (2 * B * K * K * H)  # QK^T and AV (2 products), self and cross (K keys each)
    embed = 2 * N * d * H + 2 * N * E * H + 2 * B * (freq_dim * H + H * H)  # x, cond, timestep
    final = 2 * B * H * 2 * H + 2 * N * H * d
    return depth * (linear + attention) + embed + final


def step_flops(V: int, B: int, K: int, hp: dict, n_chans: int = N_CHANS, n_times: int = N_TIMES) -> dict[str, int]:
    """FLOPs of one training step (forward + backward), by part.

    A product whose input is data (the AE encoder, the first EEG convolution) needs the forward and
    the weight gradient (2×); every other product also needs the input gradient (3×).
    """
    N = B * K
    mm = 2 * N * V * hp["latent_dim"]  # one AE product (encoder or decoder) forward
    eeg = eeg_encoder_flops(N, hp, n_chans, n_times)
    parts = {
        "autoencoder": 2 * mm + 3 * mm,
        "eeg_encoder": 2 * eeg[0] + 3 * sum(eeg[1:]),
        # the timestep MLP's first layer reads fixed sinusoids: no input gradient there
        "dit": 3 * dit_forward_flops(B, K, hp) - 2 * B * 256 * hp["hidden_size"],
    }
    parts["total"] = sum(parts.values())
    return parts


def sampler_flops(n_windows: int, K: int, V: int, hp: dict, steps: int = SAMPLER_STEPS) -> int:
    """FLOPs of DDIM sampling: EEG encoder once, the DiT at every step, the AE decoder once."""
    return (
        sum(eeg_encoder_flops(n_windows * K, hp, hp.get("n_chans", N_CHANS), hp.get("n_times", N_TIMES)))
        + steps * dit_forward_flops(n_windows, K, hp)
        + 2 * n_windows * K * hp["latent_dim"] * V
    )


def step_bytes(n_params: int, V: int, B: int, K: int, n_chans: int = N_CHANS, n_times: int = N_TIMES) -> int:
    """Fewest bytes one training step moves: AdamW reads and writes the float32 parameters and both
    moments (24 B per parameter; gradients, written by the backward and read by the optimizer, would
    add 8 B more), and the batch is read once in 16 bit."""
    return 24 * n_params + 2 * B * K * (V + n_chans * n_times)


def ema_bytes(n_params: int) -> int:
    """The EMA update: read the average and the weights, write the average (float32)."""
    return 12 * n_params
