"""LightningModules: the shared contract of every EEG→fMRI model, and the paper's diffusion model.

Every model (the diffusion model and each baseline) is an :class:`EEGfMRIModule`: it takes the
data facts ``n_vertices``, ``n_chans``, ``n_times``, ``n_frames`` (linked from the DataModule by
the CLI), trains on batches of the DataModule, and answers ``predict_frames(batch, **sampling)``
with (B, K, V) predictions in the cache's z-scored units. Sampling settings (steps, η, guidance)
come from the :class:`~eeg2fmri.callbacks.Evaluator` callback, never from the model's
hyperparameters. The evaluation, InterRecon and CIFTI writing live in callbacks.
"""

from __future__ import annotations

import ctypes
import logging
import time
from contextlib import contextmanager
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from eeg2fmri import __version__
from eeg2fmri import diffusion as D
from eeg2fmri import gaussian as G
from eeg2fmri import losses as L
from eeg2fmri.checkpoint import CHECKPOINT_FORMAT, CheckpointVersionError
from eeg2fmri.data.frames import segment_ids
from eeg2fmri.errors import EEG2fMRIError, OptionError, check_option, check_positive
from eeg2fmri.nn.autoencoder import LinearAutoencoder, held_out_variance
from eeg2fmri.nn.dit import DiT
from eeg2fmri.nn.eeg_encoder import BandPowerEncoder, EEGEncoder
from eeg2fmri.nn.regression import FIRHead
from eeg2fmri.ridge import DEFAULT_ALPHAS, ridge_per_target
from eeg2fmri.seed import global_seed

log = logging.getLogger(__name__)


# the note that the paper's model keeps its published latent d is given once per process
_published_d_noted = False


@contextmanager
def _setup_stage(stage: str):
    """One fit-time start: log its wall time (on a whole-brain cache each takes minutes, and the
    terminal would otherwise stay silent), then hand the heap pages of its freed temporaries back to
    the OS. glibc keeps freed blocks of up to 32 MB in the process's heap, and a start frees
    thousands of them (EEG batches, (b, V) frames): 0.7 GiB after the EEG feature start of a
    paper-length cache, which the process would hold through training. ``malloc_trim`` is glibc's;
    elsewhere nothing is done."""
    t0 = time.perf_counter()
    yield
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    log.info("fit setup: %s took %.1f s", stage, time.perf_counter() - t0)


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not Linux
        return None
    return libc if hasattr(libc, "malloc_trim") else None  # musl has no malloc_trim


_LIBC = _glibc()


class LayoutMismatchError(EEG2fMRIError):
    """A checkpoint applied to data of another grayordinate layout, channel count or window."""


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The Trainer running ``module``, or None when it runs on its own (a test, a tool)."""
    try:
        return module.trainer
    except RuntimeError:  # Lightning's "is not attached to a `Trainer`"
        return None


class EEGfMRIModule(pl.LightningModule):
    """Base of every model: data facts, grayordinate bookkeeping, optimizer, layout checks.

    Args:
        n_vertices: V, grayordinates per frame (linked from the data).
        n_chans: EEG channels (linked from the data).
        n_times: EEG samples per frame window (linked from the data; 800 = TR 0.8 s at 1000 Hz).
        n_frames: K, frames per window (linked from the data).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        optimizer: another optimizer (overrides lr / weight_decay), e.g. ``torch.optim.SGD``.
        eeg_context: (P, F), EEG windows of frames before / after the K frames that each batch
            carries (linked from the data): ``batch["eeg"]`` is (B, P + K + F, C, W) and frame k's
            own window is ``eeg[:, P + k]`` (:meth:`frame_eeg`).
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: OptimizerCallable | None = None,
        eeg_context: tuple[int, int] = (0, 0),
    ):
        super().__init__()
        check_option("--model.init_args.lr", lr, lr > 0, "a learning rate > 0")
        check_option("--model.init_args.weight_decay", weight_decay, weight_decay >= 0, "a value >= 0")
        self.n_vertices, self.n_chans, self.n_times, self.n_frames = n_vertices, n_chans, n_times, n_frames
        self.eeg_context = (int(eeg_context[0]), int(eeg_context[1]))
        if min(self.eeg_context) < 0:
            raise OptionError(f"eeg_context={list(eeg_context)}: expected [frames before, frames after], both >= 0")
        self.optimizer_fn = optimizer
        # standard (91,282) index of each modelled grayordinate; set from the data at fit time and
        # saved in checkpoints, so predictions map back to the whole brain and a checkpoint cannot be
        # applied to another layout by accident
        self.register_buffer("grayordinates", torch.full((n_vertices,), -1, dtype=torch.long))
        self.sampling: dict = {}  # predict_frames' sampling settings, from the evaluation (set_sampling)

    # ------------------------------------------------------------------ data contract
    def setup(self, stage: str) -> None:
        dm = getattr(attached_trainer(self), "datamodule", None)
        if dm is None:
            return
        facts = {
            "n_vertices": dm.n_vertices,
            "n_chans": dm.n_chans,
            "n_times": dm.n_times,
            "eeg_context": tuple(getattr(dm, "eeg_context", (0, 0))),
        }
        mine = {k: getattr(self, k) for k in facts}
        if facts != mine:
            raise LayoutMismatchError(
                f"the model expects {mine} but {dm.data_path} gives {facts}; a checkpoint only applies "
                "to data of the layout, channel count and window it was trained on"
            )
        indices = torch.as_tensor(dm.indices, dtype=torch.long)
        if stage == "fit" and int(self.grayordinates[0]) == -1:
            self.grayordinates.copy_(indices)
        elif int(self.grayordinates[0]) != -1 and not torch.equal(self.grayordinates.cpu(), indices):
            raise LayoutMismatchError(
                f"the model was trained on other grayordinates than {dm.data_path} holds (same count "
                f"{dm.n_vertices}, different vertices: region {dm.hparams.region!r} of another layout?)"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the data's preprocessing with the weights, so a checkpoint alone can process new
        recordings (``eeg2fmri fill``): filter and shift options, EEG scaling, channel names,
        training fMRI statistics of the modelled grayordinates. And the format version."""
        checkpoint["eeg2fmri_format"] = CHECKPOINT_FORMAT
        checkpoint["eeg2fmri_version"] = __version__
        dm = getattr(attached_trainer(self), "datamodule", None)
        if dm is not None and hasattr(dm, "preprocessing"):
            checkpoint["eeg2fmri_data"] = dm.preprocessing()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        fmt = checkpoint.get("eeg2fmri_format")
        if fmt != CHECKPOINT_FORMAT:
            raise CheckpointVersionError(
                f"checkpoint format {fmt} (written by eeg2fmri {checkpoint.get('eeg2fmri_version', 'unknown')}); "
                f"this eeg2fmri {__version__} reads format {CHECKPOINT_FORMAT}. Retrain, or load it with the "
                "version that wrote it."
            )
        saved = checkpoint.get("state_dict", {}).get("grayordinates")
        hp = checkpoint.get("hyper_parameters", {})
        if "eeg_context" in hp and tuple(hp["eeg_context"]) != self.eeg_context:
            raise LayoutMismatchError(
                f"checkpoint was trained with EEG context {list(hp['eeg_context'])} (frames before, after) but this run's "
                f"data gives {list(self.eeg_context)}: run with --data.eeg_context {list(hp['eeg_context'])} (the config "
                "it was trained with sets it)"
            )
        theirs = {k: hp.get(k) for k in ("n_vertices", "n_chans", "n_times")}
        mine = {k: getattr(self, k) for k in theirs}
        if any(v is not None and v != mine[k] for k, v in theirs.items()) or (
            saved is not None and saved.shape[0] != self.n_vertices
        ):
            raise LayoutMismatchError(
                f"checkpoint was trained on {theirs} but this run's data gives {mine}; use a checkpoint "
                "trained on this grayordinate layout and EEG montage"
            )

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_fn is not None:
            return self.optimizer_fn(params)
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(
            params, lr=self.hparams.lr, betas=(0.9, 0.999), weight_decay=self.hparams.weight_decay, fused=fused
        )

    def frame_eeg(self, eeg: Tensor) -> Tensor:
        """The K frames' own windows (B, K, C, W) of a batch's EEG (B, P + K + F, C, W)."""
        before, after = self.eeg_context
        return eeg[:, before : eeg.shape[1] - after]  # (B, K, C, W)

    # ------------------------------------------------------------------ what callbacks call
    @torch.no_grad()
    def predict_frames(self, batch: dict, **sampling) -> Tensor:
        """(B, K, V) prediction of ``batch["fmri"]`` from ``batch["eeg"]``."""
        raise NotImplementedError

    def set_sampling(self, **sampling) -> None:
        """The sampling settings (DDIM steps, η, guidance, seed, estimator) that ``predict_step``
        and the callbacks pass to :meth:`predict_frames`. The Evaluator callback sets them: sampling
        belongs to the evaluation, not to the checkpoint's hyperparameters."""
        self.sampling = dict(sampling)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"pred": self.predict_frames(batch, **self.sampling), "frame_index": batch["frame_index"]}


class EEG2fMRIDiffusion(EEGfMRIModule):
    """The diffusion model: linear fMRI autoencoder + EEG encoder + DiT over K-frame latents.

    Two forms share this class. **As published** (``configs/paper/``: ``eeg_features="conv"``,
    ``regression=False``, ``parameterization="eps"``, ``loss_weighting="eps"``, the autoencoder
    trained jointly, no EEG context): the DiT denoises the frame latents z with ε-prediction,
    cross-attending to one strided-convolution token per frame window. On the simulator it does
    not learn the EEG at the budgets we can give it, and the field's FIR ridge beats it.
    **The project's default** keeps the linear autoencoder, the DiT over K-frame latents with EEG
    cross-attention, DDIM and InterRecon, and changes what the measurements (notes/model.md)
    showed to be the causes:

    - the EEG front end is log band power per channel (:class:`BandPowerEncoder`): the paper's
      convolutions see 91 ms, shorter than one alpha cycle;
    - the batch brings ``eeg_context`` windows before and after the K frames (the configs: 8
      before, 2 after), so the first frames of a window see the EEG that drives them through the
      ~10 s hemodynamic response;
    - a regression stage (``regression=True``, :class:`FIRHead`; CorrDiff's split, Mardani et al.
      2023): μ(EEG), the latents' mean given the EEG of frames k − P … k + F. It is linear in the
      band powers, so it starts at its least-squares optimum (``regression_start="ridge"``: the
      FIR ridge per grayordinate, mapped into the latents, which drops the part of the prediction
      outside the frames' leading modes) and, like the autoencoder at its PCA start, is not moved by
      gradient steps (``train_regression``, ``train_autoencoder``): on a subject's few hundred to
      few thousand frames those steps overfit, and a moving autoencoder misaligns μ;
    - the DiT diffuses the residual z − μ with the v-weighted loss (``loss_weighting="v"``),
      which trains the high-noise steps where x̂₀ is decided; the model's frames are D(μ + r).
      By default it is an unconditional prior of the residual sequences (``cond_drop_prob=1``,
      ``residual_cond=False``): the EEG reaches the frames through μ, and the DiT supplies the
      spatiotemporal structure around it that samples and InterRecon need. Conditioned on the
      EEG tokens or on μ, it learns the residual of each training window from its conditioning
      on a subject's few hundred windows, and adds a residual of that size to test frames where
      there is none (its x̂₀ then raises the whole-brain MSE above μ's); with far more frames per
      subject, ``cond_drop_prob=0.1`` (the paper's classifier-free guidance) and
      ``residual_cond=True`` are the options to try. The posterior mean of the default is D(μ)
      (:meth:`posterior_mean`): it ties the regression stage by construction;
    - the DiT learns a correction to the exact denoiser of a stationary Gaussian model of the
      residual (``gaussian_prior``, on in the subject and demo configs; its statistics are the
      Gaussian fill's, estimated on the training split before the first step): unconditional and
      trained for a CPU's budget of steps, the DiT alone left the leading dims' frames nearly
      uncoupled (lag-1 0.06–0.24 against the data's 0.56–0.77), so InterRecon trailed linear
      interpolation; with the Gaussian model under it the prior couples them as the data do.

    Loss = diffusion (on z, or on z − μ) + ``recon_weight`` · ‖x − D(z)‖² + ``regression_weight``
    · ‖x − D(μ)‖² (D's weights held fixed in the last term; both extra terms only train what is not
    fixed). z are the autoencoder's normalised latents (unit variance per dim, see
    LinearAutoencoder). When the autoencoder trains, latent collapse is prevented in two ways: the
    non-affine BatchNorm on z divides out any rescaling of the encoder (shrinking z cannot make
    ε-prediction trivial), and the reconstruction loss forces z to keep the frame's content.

    Args:
        n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer, eeg_context: see
            EEGfMRIModule.
        latent_dim: d, the autoencoder's latent size per frame (paper: 1024; ablation 512/2048; the subject
            configs: 128, the dims of a paper-length subject's PCA start that generalise, see configs/sub1.yaml).
        eeg_embed_dim: size of one EEG token (paper: 512).
        eeg_features: the EEG front end: ``bandpower`` (log band power per channel, then an MLP)
            or ``conv`` (the paper's strided temporal convolutions).
        eeg_blocks: stride-2 convolution blocks of the ``conv`` EEG encoder.
        eeg_channels: feature channels of the ``conv`` EEG encoder's convolutions.
        sfreq: EEG sampling rate (Hz) of the prepared data (``bandpower``).
        regression: a regression stage μ(EEG) with diffusion of the residual (see above).
        regression_weight: weight of the regression stage's MSE.
        regression_start: ``ridge``: at fit, start the regression stage at the FIR ridge of every
            grayordinate on the lagged EEG features of the training frames (penalty per
            grayordinate chosen on the validation frames, as the FIR ridge baseline), mapped into
            the autoencoder's latents. The stage is linear in those features, so this is its
            least-squares optimum; the map onto the leading PCA modes keeps the part of the ridge
            prediction that lies in the frames' main directions (a reduced-rank estimate).
            ``zero``: start at the mean latent (no EEG effect).
        residual_cond: the DiT also sees μ of each frame (an embedded latent added to its token),
            besides the EEG tokens.
        train_regression: take gradient steps on the regression stage after its start (it then
            overfits short runs: notes/model.md).
        train_autoencoder: take gradient steps on the autoencoder (the paper trains it jointly);
            otherwise it stays at its PCA start, the least-squares optimum of a linear autoencoder
            of the training frames, and encodes with its running statistics.
        hidden_size: DiT width (paper: 1024).
        depth: DiT blocks (paper: 6).
        num_heads: attention heads (paper: 8).
        mlp_ratio: DiT MLP width / hidden_size.
        num_train_timesteps: diffusion steps N (paper: 1000).
        beta_start: β_1 of the linear schedule.
        beta_end: β_N of the linear schedule.
        recon_weight: weight of the autoencoder reconstruction loss.
        cond_drop_prob: probability of replacing a window's EEG by the null token in training
            (classifier-free guidance: the paper's 0.1; 0 disables it; 1, the default with the
            regression stage, trains the DiT as an unconditional prior of the residual).
        loss_weighting: ``eps``: the paper's ‖ε − ε_θ‖², uniform over n. ``v``: the same error
            divided by ᾱ_n, i.e. ‖v − v_θ‖² (with ``parameterization="v"``), which weights the
            high-noise steps, where the ε-loss barely depends on the window's content.
        gaussian_prior: the DiT learns a correction to the exact denoiser of the stationary
            Gaussian model of the latents (:func:`eeg2fmri.gaussian.denoise`; its statistics are
            estimated on the training split before the first step, :meth:`fit_gaussian`) instead of
            the whole denoiser. At its zero initialisation the prior then couples a window's frames
            as the training data do (lag by lag, per dim), which an unconditional DiT learns slowly
            on a CPU's budget of steps (notes/interrecon.md, "Build 2").
        init_pca: start the autoencoder at the PCA of up to ``pca_frames`` training frames
            (LinearAutoencoder.init_from_data) instead of a random projection.
        pca_frames: training frames used for the PCA start.
        parameterization: what the DiT outputs. ``eps``: ε directly (the paper). ``v``: v, from
            which ε = sqrt(1 − ᾱ)·x_n + sqrt(ᾱ)·v (a skip connection; same ε-loss), which keeps the
            x̂₀ estimate bounded at high noise where an ε-network's error is amplified 1/sqrt(ᾱ).
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
        latent_dim: int = 1024,
        eeg_embed_dim: int = 512,
        eeg_features: Literal["bandpower", "conv"] = "bandpower",
        eeg_blocks: int = 4,
        eeg_channels: int = 128,
        sfreq: float = 1000.0,
        regression: bool = True,
        regression_weight: float = 1.0,
        regression_start: Literal["ridge", "zero"] = "ridge",
        residual_cond: bool = False,
        train_regression: bool = False,
        train_autoencoder: bool = False,
        hidden_size: int = 1024,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        recon_weight: float = 1.0,
        cond_drop_prob: float = 1.0,
        parameterization: Literal["eps", "v"] = "v",
        loss_weighting: Literal["eps", "v"] = "v",
        gaussian_prior: bool = False,
        init_pca: bool = True,
        pca_frames: int = 4096,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer, eeg_context=eeg_context)
        p = "--model.init_args."
        check_positive(p, latent_dim=latent_dim, eeg_embed_dim=eeg_embed_dim, eeg_blocks=eeg_blocks)
        check_positive(p, eeg_channels=eeg_channels, hidden_size=hidden_size, depth=depth, num_heads=num_heads)
        check_positive(p, num_train_timesteps=num_train_timesteps, pca_frames=pca_frames)
        check_option(
            f"{p}hidden_size", hidden_size, hidden_size % num_heads == 0, f"a multiple of num_heads={num_heads}"
        )
        check_option(f"{p}cond_drop_prob", cond_drop_prob, 0 <= cond_drop_prob <= 1, "a probability in [0, 1]")
        check_option(
            f"{p}beta_end", beta_end, 0 < beta_start < beta_end < 1, f"beta_start ({beta_start}) < beta_end < 1"
        )
        self.save_hyperparameters(ignore=["optimizer"])
        self.autoencoder = LinearAutoencoder(n_vertices, latent_dim)
        if eeg_features == "bandpower":
            self.eeg_encoder = BandPowerEncoder(n_chans, n_times, eeg_embed_dim, sfreq)
            n_features = self.eeg_encoder.n_features
        else:
            self.eeg_encoder = EEGEncoder(n_chans, n_times, eeg_embed_dim, eeg_blocks, eeg_channels)
            n_features = eeg_embed_dim  # the FIR head then reads the tokens
        before, after = self.eeg_context
        self.dit = DiT(
            latent_dim,
            eeg_embed_dim,
            n_frames,
            hidden_size,
            depth,
            num_heads,
            mlp_ratio,
            max_frames=max(64, n_frames + before + after),
            eeg_context=self.eeg_context,
            latent_cond=regression and residual_cond,
        )
        self.regression_head = FIRHead(n_features, latent_dim, before, after) if regression else None
        betas = D.linear_beta_schedule(num_train_timesteps, beta_start, beta_end)
        self.register_buffer("alphas_cumprod", D.alphas_cumprod(betas).float(), persistent=False)
        # the sampler's x̂₀ bound (d,): the largest |value| per dim of what the DiT generated in the last
        # training epoch (D.clip_x0). Kept in the checkpoint beside the weights, not as a buffer: the
        # EMA would average it. None: not trained yet, or a checkpoint from before it existed.
        self.x0_bound: Tensor | None = None
        self._epoch_bound: Tensor | None = None
        # the stationary Gaussian model of the frame latents (eeg2fmri.gaussian, `fill --method gaussian`):
        # mean (d,) and autocovariance at lags 0..L-1 (d, L) per latent dim of z and, with a regression
        # stage, of the residual z - μ; estimated on the training split at fit (fit_gaussian). NaN: not
        # estimated (a checkpoint written before them). Float64: the Toeplitz solves need the digits.
        self._gaussian_bn_steps = 0  # the autoencoder's BatchNorm steps at the last estimate
        for name in ("z", "r") if regression else ("z",):
            self.register_buffer(f"gauss_{name}_mean", torch.full((latent_dim,), torch.nan, dtype=torch.float64))
            self.register_buffer(
                f"gauss_{name}_acov", torch.full((latent_dim, G.N_LAGS), torch.nan, dtype=torch.float64)
            )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(attached_trainer(self), "datamodule", None)
        if stage == "fit" and hasattr(dm, "train_frames_sample"):  # starts from the training data
            device = self.trainer.strategy.root_device
            if self.hparams.init_pca:
                with _setup_stage("PCA start of the autoencoder"):
                    # same seeded frames on every rank, so DDP replicas start identical (a resumed run
                    # then loads its checkpoint over this start); float16 as stored, read in blocks
                    x = dm.train_frames_sample(self.hparams.pca_frames, seed=0)  # (N, V)
                    self.autoencoder.init_from_data(x.to(device))  # PCA on the accelerator
                    del x
                with _setup_stage("latent-dim check"):
                    self._check_latent_dim(dm, device)
            table = None  # (T, Fe) each frame's band-power features, computed once for the starts below
            if self.hparams.eeg_features == "bandpower":
                with _setup_stage("EEG feature start"):
                    table = self._start_features(dm, device)
            if self.regression_head is not None and self.hparams.regression_start == "ridge":
                with _setup_stage("ridge start of the regression stage"):
                    self._start_regression(dm, device, table)
            with _setup_stage("Gaussian fill statistics"):
                self.fit_gaussian(dm, table)
            del table
        if self.regression_head is not None and not self.hparams.train_regression:
            self.regression_head.requires_grad_(False)
        if not self.hparams.train_autoencoder:
            self.autoencoder.requires_grad_(False)

    @torch.no_grad()
    def _check_latent_dim(self, dm, device) -> None:
        """Warn when many latent dims of the PCA start do not generalise to the validation frames
        (:func:`~eeg2fmri.nn.autoencoder.held_out_variance`): the residual prior would learn the
        training frames' own noise there. Only a warning: d is a shape of the network, chosen in
        the config. It fires when fewer than half of the d dims generalise: the suggested count is
        itself an estimate from a few dozen validation frames (29-31 of the demo's 40 from one run
        to the next), so a margin of a quarter would make a config's warning depend on the run. The
        paper's model as published (``train_autoencoder``) keeps its d by design: it says so, once."""
        was = self.autoencoder.training
        self.autoencoder.eval()
        z = [self.autoencoder.encode(b["fmri"][:, 0].to(device)) for b in dm.iter_frames("val", eeg="none")]  # [(b, d)]
        self.autoencoder.train(was)
        n_val = sum(len(v) for v in z)
        if n_val < 2 * 8:
            return
        ratio, suggested = held_out_variance(torch.cat(z))  # (d,), int
        d = self.hparams.latent_dim
        trainer = attached_trainer(self)
        if suggested >= 0.5 * d or not (trainer is None or trainer.is_global_zero):  # once, not per rank
            return
        median = float(ratio[suggested:].median())
        if self.hparams.train_autoencoder:  # the paper's form: d is the published one, kept by design
            global _published_d_noted
            if not _published_d_noted:  # one note per process (a reproduce job fits many cells)
                _published_d_noted = True
                log.warning(
                    "autoencoder: latent dims %d-%d of %d keep %.2f of their training variance on the %d validation "
                    "frames (median) at the PCA start; the paper's model keeps its published d by design and "
                    "trains the autoencoder from this start (--model.init_args.latent_dim %d would fit this data; "
                    "said once)",
                    suggested + 1,
                    d,
                    d,
                    median,
                    n_val,
                    max(suggested, 1),
                )
            return
        log.warning(
            "autoencoder: latent dims %d-%d of %d keep %.2f of their training variance on the %d validation frames "
            "(median): directions of the training frames' own noise, which the diffusion prior learns as signal. "
            "--model.init_args.latent_dim %d fits this data (notes/model.md, 'The latent dims that generalise').",
            suggested + 1,
            d,
            d,
            median,
            n_val,
            max(suggested, 1),
        )

    @torch.no_grad()
    def _start_features(self, dm, device) -> Tensor:
        """Band-power standardisation from the training frames' own windows. Returns the table
        of :meth:`_feature_table` for the training and validation frames, from the same pass over
        their EEG (the later starts gather each frame's context from it)."""
        power = torch.zeros(len(dm.split), self.eeg_encoder.n_features, device=device)  # (T, Fe)
        done = torch.zeros(len(dm.split), dtype=torch.bool, device=device)  # (T,) rows computed
        train = []
        for split in ("train", "val"):
            for b in dm.iter_frames(split, device=device, eeg="frame"):
                rows = b["frame_index"][:, 0]  # (b,)
                power[rows], done[rows] = self.eeg_encoder.log_power(b["eeg"])[:, 0], True  # (b, Fe)
                if split == "train":
                    train.append(rows)
        self.eeg_encoder.init_from_data(power[torch.cat(train)])  # (N_train, Fe)
        enc = self.eeg_encoder
        power[done] = (power[done] - enc.feature_mean) / enc.feature_std  # as BandPowerEncoder.features
        return power

    @torch.no_grad()
    def _feature_table(self, dm, device, splits: tuple[str, ...]) -> Tensor:
        """(T, Fe): each frame's own band-power features, once per frame of ``splits`` (zero
        elsewhere), for the callers that gather a frame's EEG context from it by cache row
        (``iter_frames(eeg="rows")``) instead of recomputing each window P + F + 1 times."""
        table = torch.zeros(len(dm.split), self.eeg_encoder.n_features, device=device)  # (T, Fe)
        for split in splits:
            for b in dm.iter_frames(split, device=device, eeg="frame"):
                table[b["frame_index"][:, 0]] = self.eeg_encoder.features(b["eeg"])[:, 0]  # (b, Fe)
        return table

    @torch.no_grad()
    def _start_regression(self, dm, device, table: Tensor | None = None) -> None:
        """The regression stage's ridge start (see ``regression_start``): the FIR ridge of every
        grayordinate on the lagged EEG features of the training frames, with its penalty chosen
        on the validation frames, mapped into the latents by the autoencoder (z = A x + c): μ =
        A μ_x + c. Float64 Gram sums of the design, float32 sums against the grayordinates.

        Cost, for a whole-brain fit: each frame's band power is computed once (a table of the
        frames' features) and the lagged design gathered from it; the one (F, V) float32 sum of
        X^T Y is accumulated, centred and turned into the solution in place, and the validation
        frames are kept as stored (float16) and centred a block of grayordinates at a time inside
        :func:`ridge_per_target`. ``table``: :meth:`_feature_table` of the training and validation
        frames when the caller has it (:meth:`_start_features` returns it)."""
        A, c = self.autoencoder.latent_map()  # (d, V), (d,) in evaluation mode: the PCA start
        table = self._feature_table(dm, device, ("train", "val")) if table is None else table.to(device)  # (T, Fe)

        def design(b: dict) -> Tensor:  # (b, F) float64: the lagged features of each frame
            h = table[b["eeg_rows"]]  # (b, N, Fe); masked windows are zeroed by the design
            return self.regression_head.design(h, b["eeg_mask"])[:, 0].double()

        n = torch.zeros((), dtype=torch.float64, device=device)
        sx = sy = sxx = sxy = None
        for b in dm.iter_frames("train", device=device, eeg="rows", stored_dtype=True):
            x = design(b)  # (b, F)
            y = b["fmri"][:, 0].float()  # (b, V)
            if sxy is None:
                sx, sxx = torch.zeros_like(x[0]), x.new_zeros(x.shape[1], x.shape[1])  # (F,), (F, F)
                sy = torch.zeros(y.shape[1], dtype=torch.float64, device=y.device)  # (V,)
                sxy = y.new_zeros(x.shape[1], y.shape[1])  # (F, V) float32, the one big sum
            n += len(x)
            sx += x.sum(0)
            sy += y.double().sum(0)
            sxx += x.T @ x
            sxy.addmm_(x.float().T, y)  # in place: no (F, V) temporary per batch
        val = [
            (design(b), b["fmri"][:, 0]) for b in dm.iter_frames("val", device=device, eeg="rows", stored_dtype=True)
        ]
        val_x, val_y = [v[0] for v in val], [v[1] for v in val]  # [(b, F)], [(b, V) as stored (float16)]
        del val
        mx, my = sx / n, sy / n  # (F,), (V,)
        cxx = sxx - n * torch.outer(mx, mx)  # (F, F)
        for s in range(0, sxy.shape[1], 8192):  # centred in place, a block of grayordinates at a time
            sxy[:, s : s + 8192].sub_(torch.outer(n * mx, my[s : s + 8192]).float())  # (F, b)
        xv = torch.cat(val_x) - mx if val_x else None  # (n_val, F)
        yv = torch.cat(val_y) if val_y else None  # (n_val, V) uncentred, as stored
        del val_y
        alphas = torch.tensor(DEFAULT_ALPHAS, dtype=torch.float64)
        w, alpha = ridge_per_target(
            cxx, sxy, n, alphas, xv, yv, project=A.T, y_center=my.float(), overwrite=True
        )  # (F, d): W_x A^T
        del sxy, yv
        bias = my.float() @ A.T + c - mx.float() @ w  # (d,): A (my - mx W_x) + c
        self.regression_head.set_linear(w, bias)
        log.info(
            "regression stage: ridge start from %d training frames, %d validation frames; penalty per grayordinate "
            "median %.3g",
            int(n),
            0 if xv is None else len(xv),
            float(alpha.median()),
        )

    @torch.no_grad()
    def fit_gaussian(self, dm, table: Tensor | None = None) -> None:
        """The stationary Gaussian model of the frame latents (:mod:`eeg2fmri.gaussian`), estimated on
        the training split of ``dm``: mean and autocovariance per latent dim of z = E x and, with a
        regression stage, of the residual r = z − μ(EEG), over consecutive frames of one clip
        (``dm.iter_frames`` gives the frames in cache order; a stretch is a segment of
        :func:`~eeg2fmri.data.frames.segment_ids`). Runs in evaluation mode (the EEG encoder's
        BatchNorm, the autoencoder's running statistics), as the fill uses the model, and where the
        weights are (in Lightning's set-up hook, before the module moves to the accelerator); every
        submodule's mode is put back as it was, so a fit trains exactly as without this estimate.
        Called at set-up and again at the end of each training epoch in which the latents or μ may
        have moved (:meth:`on_train_epoch_end`). ``table``: :meth:`_feature_table` of (at least)
        the training frames when the caller has it, as set-up does."""
        if not all(hasattr(dm, a) for a in ("iter_frames", "frame_volume", "frame_clip", "split")):
            return  # not the project's DataModule: no frames to estimate from
        modes = {m: m.training for m in self.modules()}
        self.eval()
        device = self.autoencoder.decoder.weight.device
        # band-power features are per window: computed once per frame and gathered by cache row
        # (a conv encoder's features are not, and take each frame's EEG context)
        if self.regression_head is None or self.hparams.eeg_features != "bandpower":
            table = None
        elif table is None:
            table = self._feature_table(dm, device, ("train",))  # (T, Fe)
        else:
            table = table.to(device)
        mode = "none" if self.regression_head is None else "context" if table is None else "rows"
        z, r, rows = [], [], []
        for b in dm.iter_frames("train", device=device, eeg=mode):
            zb = self.autoencoder.encode(b["fmri"][:, 0].float())  # (b, d)
            z.append(zb.double())
            if table is not None:
                mu = self.regression_head(table[b["eeg_rows"]], b["eeg_mask"])[:, 0]  # (b, d)
                r.append(zb.double() - mu.double())
            elif self.regression_head is not None:
                mu = self.encode_eeg(b["eeg"], b["eeg_mask"])[1][:, 0]  # (b, d)
                r.append(zb.double() - mu.double())
            rows.append(b["frame_index"][:, 0].cpu())
        del table
        for m, training in modes.items():
            m.training = training
        self._gaussian_bn_steps = int(self.autoencoder.norm.num_batches_tracked)
        segment = segment_ids(dm.frame_volume, same=(dm.frame_clip, dm.split))[torch.cat(rows).numpy()]  # (N,)
        segment = torch.as_tensor(segment, device=z[0].device)
        for name, x in (("z", z), ("r", r)) if r else (("z", z),):
            mean, acov = G.autocovariance(torch.cat(x), segment, G.N_LAGS)  # (d,), (d, L)
            getattr(self, f"gauss_{name}_mean").copy_(mean)
            getattr(self, f"gauss_{name}_acov").copy_(acov)
        log.info(
            "Gaussian fill statistics: %d training frames in %d stretches of consecutive frames, %d lags",
            len(segment),
            len(torch.unique(segment)),
            G.valid_lags(self.gauss_z_acov),
        )

    @property
    def has_gaussian(self) -> bool:
        """Whether the model holds the statistics of the Gaussian fill (a checkpoint written before
        :meth:`fit_gaussian` existed, or a model never fitted, does not)."""
        return G.valid_lags(self.gauss_z_acov) >= 3

    def train(self, mode: bool = True):
        # a fixed autoencoder encodes with its running (PCA) statistics in training too, so that the
        # latents the DiT and the regression stage see are those of the start
        super().train(mode)
        if not self.hparams.train_autoencoder:
            self.autoencoder.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning keeps each submodule's mode as it finds it at fit start (it does not call
        # train()), so a fixed autoencoder left in training mode would move its BatchNorm statistics
        # away from the PCA start until the first validation
        if not self.hparams.train_autoencoder:
            self.autoencoder.eval()

    # ------------------------------------------------------------------ EEG side
    def encode_eeg(self, eeg: Tensor, eeg_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """EEG windows (B, N, C, W) -> tokens h (B, N, E) and the regression stage's latents μ
        (B, K, d), or None without a regression stage. N = P + K + F."""
        return L.encode_eeg(self.eeg_encoder, self.regression_head, eeg, eeg_mask, self.hparams)

    # ------------------------------------------------------------------ training
    def _losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The batch's losses (:func:`eeg2fmri.losses.training_losses`, which the bench's reference
        also trains); the condition dropout is drawn in training mode only, where the batch's
        targets also widen this epoch's x̂₀ bound."""
        nets = (self.autoencoder, self.eeg_encoder, self.dit, self.regression_head, self.alphas_cumprod)
        stats = {} if self.training else None
        losses = L.training_losses(
            *nets, batch, self.hparams, training=self.training, generator=generator, stats=stats, gauss=self._gauss()
        )
        if stats:
            b = stats["target_absmax"]  # (d,)
            self._epoch_bound = b if self._epoch_bound is None else torch.maximum(self._epoch_bound, b)
        return losses

    def on_train_epoch_end(self) -> None:
        if self._epoch_bound is not None:
            self.x0_bound, self._epoch_bound = self._epoch_bound, None
        moved = int(self.autoencoder.norm.num_batches_tracked) != self._gaussian_bn_steps
        if (
            moved
            or self.hparams.train_autoencoder
            or (self.regression_head is not None and self.hparams.train_regression)
        ):
            # the latents or μ may have moved this epoch (trained weights, or the autoencoder's
            # running statistics updated by a forward pass in training mode): the Gaussian model
            # follows them (the EMA then averages these estimates as it averages the weights)
            self.fit_gaussian(getattr(attached_trainer(self), "datamodule", None))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        bound = self.x0_bound if self.x0_bound is not None else self._epoch_bound
        if bound is not None:
            checkpoint["eeg2fmri_x0_bound"] = bound.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.x0_bound = checkpoint.get("eeg2fmri_x0_bound")
        # a checkpoint written before the Gaussian statistics existed loads with the model's own
        # (NaN when loaded on its own, :attr:`has_gaussian` False; estimated at set-up when a fit
        # resumes from it); the EMA callback loads "current_model_state" as strictly as "state_dict"
        for key in ("state_dict", "current_model_state"):
            state = checkpoint.get(key)
            if state is None:
                continue
            for name, buf in self.named_buffers():
                if name.startswith("gauss_") and name not in state:
                    state[name] = buf.detach().clone()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        # the step's randomness (timesteps, noise, condition dropout) is drawn from (seed, step)
        # alone, so a run resumed from a checkpoint continues exactly as an uninterrupted one would
        seed = global_seed(default=0)
        g = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + self.global_step)
        losses = self._losses(batch, generator=g)
        if self._logs_this_step():
            self.log_dict(
                {f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=batch["fmri"].shape[0]
            )
            self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=batch["fmri"].shape[0])
        return losses["loss"]

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's training metrics (every ``log_every_n_steps``).

        Each ``self.log`` call costs host time (Lightning moves its result-metric object to the
        value's device on every call: ~0.15 ms a call on a slow CPU core, bench/NOTES.md), so the
        losses are handed over only on the steps that are written. Lightning's rule: step
        ``global_step + 1`` (the one this batch takes) is a multiple of ``log_every_n_steps``, or
        the run is stopping.
        """
        trainer = attached_trainer(self)
        if trainer is None:
            return True
        if trainer.log_every_n_steps == 0:
            return False
        return (self.global_step + 1) % trainer.log_every_n_steps == 0 or trainer.should_stop

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # a fixed generator per batch: the validation loss is comparable across epochs
        g = torch.Generator(device=self.device).manual_seed(batch_idx)
        losses = self._losses(batch, generator=g)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, sync_dist=True, batch_size=batch["fmri"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        g = torch.Generator(device=self.device).manual_seed(batch_idx)
        losses = self._losses(batch, generator=g)
        self.log_dict({f"test/{k}": v for k, v in losses.items()}, sync_dist=True, batch_size=batch["fmri"].shape[0])

    def _eps(
        self,
        x_t: Tensor,
        t: Tensor,
        h: Tensor,
        drop: Tensor | None = None,
        eeg_mask: Tensor | None = None,
        mu: Tensor | None = None,
    ) -> Tensor:
        """ε_θ(x_t, t, h_EEG[, μ]) (B, K, d) float32, from the DiT's output per ``parameterization``."""
        return L.denoiser_eps(self.dit, self.alphas_cumprod, x_t, t, h, drop, eeg_mask, mu, self.hparams, self._gauss())

    def _gauss(self) -> tuple[Tensor, Tensor] | None:
        """(mean (d,), autocovariance (d, L)) of what the DiT generates (the residual with a regression
        stage, else z) when it corrects the Gaussian model (``gaussian_prior``), else None."""
        if not self.hparams.get("gaussian_prior", False):
            return None
        name = "z" if self.regression_head is None else "r"
        if G.valid_lags(getattr(self, f"gauss_{name}_acov")) < 1:
            raise RuntimeError(
                "gaussian_prior: the model holds no Gaussian statistics of its latents; they are estimated "
                "at fit's set-up from the project's data module (EEGfMRIDataModule)"
            )
        return getattr(self, f"gauss_{name}_mean"), getattr(self, f"gauss_{name}_acov")

    # ------------------------------------------------------------------ sampling
    def _eps_fn(self, h: Tensor, guidance_scale: float, eeg_mask: Tensor | None = None, mu: Tensor | None = None):
        """ε(x_t, t) for the sampler: EEG-conditioned, with classifier-free guidance if scale != 1."""
        if guidance_scale == 1.0:
            return lambda x_t, t: self._eps(x_t, t, h, None, eeg_mask, mu)

        def twice(u: Tensor | None) -> Tensor | None:
            return None if u is None else torch.cat([u, u])

        def guided(x_t: Tensor, t: Tensor) -> Tensor:
            B = x_t.shape[0]
            drop = torch.arange(2 * B, device=x_t.device) >= B  # (2B,) second half unconditional
            eps = self._eps(twice(x_t), twice(t), twice(h), drop, twice(eeg_mask), twice(mu))  # (2B, K, d)
            return D.cfg_eps(eps[:B], eps[B:], guidance_scale)  # (B, K, d)

        return guided

    @torch.no_grad()
    def sample(
        self,
        eeg: Tensor,
        num_inference_steps: int = 50,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        observed: Tensor | None = None,
        observed_mask: Tensor | None = None,
        null_space: bool = True,
        time_travel: int = 0,
        time_travel_repeat: int = 1,
        seed: int | None = 0,
        eeg_mask: Tensor | None = None,
        clip_x0: bool = True,
        zero_noise: bool = False,
    ) -> Tensor:
        """DDIM sampling of (B, K, V) frames from EEG (B, P + K + F, C, W).

        ``zero_noise``: start the chain at the noise's mean, x_T = 0, instead of a draw (``seed`` then
        only seeds η's noise). With η = 0 this is one deterministic chain that estimates the mean of
        the samples: for a denoiser linear in x_t the chain is linear in (x_T, y), so the mean over
        x_T ~ N(0, I) is exactly the chain from x_T = 0 (tests/test_interrecon.py). For InterRecon it
        is the estimate of the missing frames' conditional mean at the cost of one sample, without
        the conditional spread that a mean of N samples keeps (notes/interrecon.md, "Build 3").

        ``clip_x0``: clip every step's x̂₀ to the training targets' range per latent dim
        (:func:`~eeg2fmri.diffusion.clip_x0`, :attr:`x0_bound`; no clipping where the checkpoint has
        no bound).

        With ``observed`` (B, K, V) and ``observed_mask`` (B, K): InterRecon. Observed frames are
        encoded (y = E x_obs) and imposed on x̂₀ at every step by the null-space projection; in the
        output they are the observed data exactly. With a regression stage the chain generates the
        residual r = z − μ, so the projection imposes y − μ (A†(y − μ) + (I − A†A) r̂₀, then
        z = μ + r: still y at the observed frames). ``null_space=False`` samples without the
        projection and only pastes the observed frames into the output (the "without null space"
        row of the paper's Table 2).
        """
        B = eeg.shape[0]
        h, mu = self.encode_eeg(eeg, eeg_mask)  # (B, N, E), (B, K, d) or None
        K = self._n_frames_of(eeg)
        g = None if seed is None else torch.Generator(device=eeg.device).manual_seed(seed)
        shape = (B, K, self.hparams.latent_dim)
        eps_fn = self._eps_fn(h, guidance_scale, eeg_mask, mu)
        if clip_x0 and self.x0_bound is not None:
            eps_fn = D.clip_x0(eps_fn, self.x0_bound, self.alphas_cumprod)
        x_T = torch.zeros(shape, device=eeg.device) if zero_noise else None  # (B, K, d)
        common = dict(num_inference_steps=num_inference_steps, eta=eta, generator=g, x_T=x_T)
        if observed is not None and null_space:
            y = self.autoencoder.encode(observed)  # (B, K, d)
            if mu is not None:
                y = y - mu  # the observed residual
            z = D.interrecon_sample(
                eps_fn,
                y,
                observed_mask,
                self.alphas_cumprod,
                time_travel=time_travel,
                time_travel_repeat=time_travel_repeat,
                **common,
            )
        else:
            z = D.ddim_sample(eps_fn, shape, self.alphas_cumprod, device=eeg.device, **common)  # (B, K, d)
        if mu is not None:
            z = z + mu  # (B, K, d)
        x = self.autoencoder.decode(z).float()  # (B, K, V)
        if observed is not None:
            x = torch.where(observed_mask[..., None], observed.float(), x)  # observed frames exact
        return x

    @torch.no_grad()
    def posterior_mean(
        self,
        eeg: Tensor,
        guidance_scale: float = 1.0,
        seed: int | None = 0,
        eeg_mask: Tensor | None = None,
        clip_x0: bool = True,
    ) -> Tensor:
        """E[x | EEG] in one network call: the denoiser's x̂₀ at the noisiest training step (clipped
        to :attr:`x0_bound` with ``clip_x0``, as :meth:`sample`'s steps are).

        At n = N − 1 the noisy latent carries almost nothing of the data (ᾱ = 4e-5 on the linear
        schedule), so the ε-loss-optimal x̂₀(x_n, n, EEG) = E[z | x_n, EEG] ≈ E[z | EEG]; decoded
        by the linear decoder it is the frames' posterior mean. Needs ``parameterization="v"`` to be
        well conditioned (an ε-network's error is multiplied by 1/sqrt(ᾱ) ≈ 160 here). Sampling
        settings other than guidance and seed do not apply. Returns (B, K, V) float32.

        With the regression stage and an unconditional residual prior (:attr:`mean_is_mu`), the
        model is z = μ(EEG) + r with r independent of the EEG, so E[z | EEG] = μ + E[r]; E[r] is the
        mean of the training residuals, zero up to the least-squares fit, and the posterior mean is
        D(μ) with no network call (the network's x̂₀ would be a noisy estimate of that constant).
        """
        B = eeg.shape[0]
        h, mu = self.encode_eeg(eeg, eeg_mask)  # (B, N, E), (B, K, d) or None
        if self.mean_is_mu:
            return self.autoencoder.decode(mu).float()  # (B, K, V)
        K = self._n_frames_of(eeg)
        g = None if seed is None else torch.Generator(device=eeg.device).manual_seed(seed)
        x_t = torch.randn((B, K, self.hparams.latent_dim), generator=g, device=eeg.device)  # (B, K, d)
        n = len(self.alphas_cumprod) - 1
        t = torch.full((B,), n, dtype=torch.long, device=eeg.device)  # (B,)
        eps = self._eps_fn(h, guidance_scale, eeg_mask, mu)(x_t, t)  # (B, K, d)
        z = D.predict_x0(x_t, eps, self.alphas_cumprod[n])  # (B, K, d)
        if clip_x0 and self.x0_bound is not None:
            b = self.x0_bound.to(z)  # (d,)
            z = z.clamp(-b, b)  # (B, K, d)
        if mu is not None:
            z = z + mu
        return self.autoencoder.decode(z).float()  # (B, K, V)

    @property
    def mean_is_mu(self) -> bool:
        """Whether the posterior mean is D(μ): a regression stage under an unconditional residual
        prior (``cond_drop_prob >= 1``, ``residual_cond=False``), see :meth:`posterior_mean`."""
        return (
            self.regression_head is not None
            and self.hparams.cond_drop_prob >= 1.0
            and self.dit.latent_cond_embedder is None
        )

    @torch.no_grad()
    def gaussian_fill(
        self, x: Tensor, observed_mask: Tensor, eeg: Tensor | None = None, eeg_mask: Tensor | None = None
    ) -> Tensor:
        """Frames ``x`` (B, T, V) with the missing ones (``observed_mask`` (B, T) False) at their
        conditional mean given the observed ones under the stationary Gaussian model of the latents
        (:mod:`eeg2fmri.gaussian`, :meth:`fit_gaussian`), decoded; observed frames are ``x`` exactly
        and missing ones are never read (NaN allowed). Returns (B, T, V) float32.

        With ``eeg`` (B, P + T + F, C, W) and a regression stage, each frame's mean is its μ(EEG) and
        the model is that of the residual z − μ; otherwise the training latents' mean and the
        model of z: no EEG."""
        if not self.has_gaussian:
            raise EEG2fMRIError(
                "this model holds no statistics for the Gaussian fill (a checkpoint written before they "
                "were stored at fit): refit it with `eeg2fmri fit`"
            )
        obs = observed_mask[..., None]  # (B, T, 1)
        x = torch.where(obs, x.float(), 0.0)  # (B, T, V) missing frames never reach the encoder
        z = self.autoencoder.encode(x)  # (B, T, d)
        if eeg is not None and self.regression_head is not None:
            mu = self.encode_eeg(eeg, eeg_mask)[1]  # (B, T, d)
            mean, acov = mu.double() + self.gauss_r_mean, self.gauss_r_acov  # (B, T, d), (d, L)
        else:
            mean, acov = self.gauss_z_mean, self.gauss_z_acov  # (d,), (d, L)
        z_hat = G.conditional_mean(z, observed_mask, acov, mean)  # (B, T, d) float64
        out = x.clone()  # (B, T, V)
        out[~observed_mask] = self.autoencoder.decode(z_hat[~observed_mask].float()).float()  # (n_missing, V)
        return out

    def _n_frames_of(self, eeg: Tensor) -> int:
        return eeg.shape[1] - sum(self.eeg_context)

    @torch.no_grad()
    def predict_frames(
        self, batch: dict, estimator: Literal["mean", "sample"] = "mean", num_samples: int = 1, **sampling
    ) -> Tensor:
        """(B, K, V) frames from ``batch["eeg"]`` by one of the estimators of the Evaluator:

        - ``mean`` with ``num_samples = 1``: the posterior mean in one call (:meth:`posterior_mean`);
        - ``mean`` with ``num_samples = N > 1``: the average of N DDIM samples (seeds seed, seed + 1, ...);
        - ``sample``: one DDIM sample (``num_samples`` must be 1).
        """
        eeg, eeg_mask = batch["eeg"], batch.get("eeg_mask")
        if estimator == "sample":
            if num_samples != 1:
                raise ValueError(
                    f"estimator 'sample' draws one sample; got num_samples={num_samples} (use estimator 'mean')"
                )
            return self.sample(eeg, eeg_mask=eeg_mask, **sampling)
        if estimator != "mean":
            raise ValueError(f"estimator={estimator!r}: expected 'mean' or 'sample'")
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}: expected at least 1")
        if num_samples == 1:
            keep = {k: sampling[k] for k in ("guidance_scale", "seed", "clip_x0") if k in sampling}
            return self.posterior_mean(eeg, eeg_mask=eeg_mask, **keep)
        return self.sample_mean(eeg, num_samples, seed=sampling.pop("seed", 0) or 0, eeg_mask=eeg_mask, **sampling)

    def sample_mean(self, eeg: Tensor, num_samples: int, seed: int = 0, **sampling) -> Tensor:
        """(B, K, V) average of ``num_samples`` DDIM samples (:meth:`sample` with ``sampling``; seeds
        seed, seed + 1, ...): the posterior-mean estimate for any sampler setting, InterRecon's anchors
        included, where :meth:`posterior_mean`'s one call covers the EEG alone."""
        total = None
        for i in range(num_samples):
            x = self.sample(eeg, seed=seed + i, **sampling)  # (B, K, V)
            total = x if total is None else total + x
        return total / num_samples
