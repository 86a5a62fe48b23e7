"""The experiments' scales and protocols, and the prepared subject each runs on.

Scales (``SCALE=``): ``ci`` (simulated CI-sized subjects on every 20th grayordinate, CPU-sized
models, a few epochs: minutes on 2 cores), ``small`` (the simulator's small scale, every 4th
grayordinate, longer training), ``long`` (a CineBrain-length subject, 27,000 frames, on every 20th
grayordinate with SCALE=small's networks: hours on 2 cores), ``paper`` (the paper's data size and the configs' own settings:
91,282 grayordinates, 200 epochs; a GPU job). Without real data, subjects are simulated; point
``--raw`` at a folder of CineBrain subjects to use real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eeg2fmri.errors import OptionError
from eeg2fmri.experiments.tables import say


@dataclass
class Scale:
    simulate: str  # the simulator's scale
    grayordinates: str  # the simulator's grayordinates
    ks: tuple[int, ...]  # window lengths of Table 1
    epochs: dict[str, int] = field(default_factory=dict)  # per method slug (missing: the config's)
    model: dict[str, dict] = field(
        default_factory=dict
    )  # per method slug: --model.* overrides (paper: else diffusion's)
    extra: list[str] = field(default_factory=list)  # other CLI arguments for every cell
    # InterRecon samples averaged for Table 2's posterior-mean row (the average of N null-space samples
    # nears the posterior mean given EEG and anchors as N grows; its cost is N samplings per fill)
    interrecon_samples: int = 4
    # Table 1's methods when none are named (slugs of cells.CELL_METHODS; None: every method but the
    # conditioned-DiT variant, which only the paper-length tier runs by default)
    methods: tuple[str, ...] | None = None


_CPU_DIFFUSION = dict(latent_dim=128, eeg_embed_dim=64, eeg_channels=32, hidden_size=128, depth=2, num_heads=4, lr=1e-3)
_CPU_NETS = {
    "cnn_tc": dict(channels=16, latent_dim=64, decoder_channels=16),
    "cnn_tag": dict(channels=8, latent_dim=64),
    "e2fnet": dict(unet_channels=32, base_channels=8),
    "e2fgan": dict(unet_channels=32, base_channels=8),
    "ridge": dict(alpha=1e4),
}
# the CLI arguments of SCALE=small's and SCALE=long's cells
_CPU_EXTRA = [
    "--data.batch_size",
    "32",
    "--ema.decay",
    "0.999",
    "--evaluator.num_inference_steps",
    "50",
    "--evaluator.every_n_epochs",
    "20",
    "--trainer.num_sanity_val_steps",
    "0",
]
SCALES: dict[str, Scale] = {
    "ci": Scale(
        simulate="ci",
        grayordinates="every:20",
        ks=(3, 10, 30),
        epochs={
            "diffusion": 15,
            "paper": 15,
            "cnn_tc": 3,
            "cnn_tag": 3,
            "e2fnet": 3,
            "e2fgan": 3,
            "mean": 1,
            "ridge": 1,
            "fir_ridge": 1,
        },
        model={"diffusion": _CPU_DIFFUSION, **_CPU_NETS},
        extra=[
            "--data.batch_size",
            "16",
            "--ema.decay",
            "0.99",
            "--evaluator.num_inference_steps",
            "20",
            "--evaluator.every_n_epochs",
            "1000",
            "--trainer.num_sanity_val_steps",
            "0",
        ],
    ),
    "small": Scale(
        simulate="small",
        grayordinates="every:4",
        ks=(3, 10, 30),
        epochs={
            "diffusion": 40,
            "paper": 40,
            "cnn_tc": 10,
            "cnn_tag": 10,
            "e2fnet": 10,
            "e2fgan": 10,
            "mean": 1,
            "ridge": 1,
            "fir_ridge": 1,
        },
        # latent d = 48: of the PCA start's dims on this subject's 1,298 training frames, dims 53 on keep
        # 0.05-0.23 of their training variance on the validation frames (the fit's held-out-variance
        # warning; notes/model.md, "The latent dims that generalise"). The paper's model keeps 256.
        model={
            "diffusion": {**_CPU_DIFFUSION, "latent_dim": 48, "hidden_size": 256},
            "paper": {**_CPU_DIFFUSION, "latent_dim": 256, "hidden_size": 256},
            **_CPU_NETS,
        },
        extra=_CPU_EXTRA,
        # the mean of N random samples is Table 2's comparison row (the estimate is the chain from x_T = 0);
        # with the old prior whole r on the filled frames was 0.084 / 0.196 / 0.241 / 0.259 at N = 1 / 16 / 64 / 256
        interrecon_samples=16,
    ),
    # A CineBrain-length subject (20 runs x 18 min, 27,000 frames) on every 20th grayordinate with SCALE=small's
    # networks: what 12x the training data does to the same model, on 2 CPU cores (notes/model.md). An epoch is
    # ~500 steps (15,900 training windows): 2 epochs are 60 % of SCALE=small's 40 in steps, what the session
    # that measured the tier could afford on 2 shared cores (each cell holds ~7 GB, so two run at a time).
    "long": Scale(
        simulate="paper",
        grayordinates="every:20",
        ks=(10,),
        epochs={"diffusion": 2, "diffusion_cond": 2, "paper": 2, "cnn_tag": 1, "mean": 1, "ridge": 1, "fir_ridge": 1},
        # latent d = 128, the subject configs' value: on this subject's 17,021 training frames the top 128 PCA
        # modes hold 0.46 of the validation frames' variance against 0.32 for SCALE=small's 48, and the FIR ridge
        # projected on them scores whole-brain temporal r 0.091 against 0.090 at 48 (tools/latent_dims.py;
        # notes/model.md, "The latent dim at the tier: 48 → 128")
        model={
            "diffusion": {**_CPU_DIFFUSION, "latent_dim": 128, "hidden_size": 256},
            "paper": {**_CPU_DIFFUSION, "latent_dim": 256, "hidden_size": 256},
            **_CPU_NETS,
        },
        extra=_CPU_EXTRA,
        methods=("mean", "ridge", "fir_ridge", "cnn_tag", "diffusion", "diffusion_cond", "paper"),
        # 530 test windows, each sampled once per gap of Figure 3 (9 passes): 4 samples are ~40 min on a core
        interrecon_samples=4,
    ),
    "paper": Scale(simulate="paper", grayordinates="all", ks=(3, 10, 30), interrecon_samples=16),
}


def sampler_steps(sc: Scale) -> int:
    """DDIM steps of the scale's evaluator (its ``--evaluator.num_inference_steps``, else 50), which
    Table 2 and the fill study sample with too."""
    flag = "--evaluator.num_inference_steps"
    return int(sc.extra[sc.extra.index(flag) + 1]) if flag in sc.extra else 50


# ---------------------------------------------------------------------------------------------
# Protocols, and the prepared subject
# ---------------------------------------------------------------------------------------------

PROTOCOLS = {
    "project": "the project's: fMRI z-scored with training statistics, random whole clips as test",
    "paper": "the CineBrain authors': the release form imported, z-score over all frames (ddof 1), the recording's last 20 % as test",
}


def protocol_tag(scale: str, protocol: str) -> str:
    """The folder of a scale's caches and results under a protocol (``ci``, ``ci-paper``)."""
    if protocol not in PROTOCOLS:
        raise OptionError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return scale if protocol == "project" else f"{scale}-{protocol}"


def ensure_subject(subject: int, scale: Scale, raw: Path, prepared: Path, protocol: str = "project") -> Path:
    """The prepared cache of a subject: real data under ``raw`` if present, else simulated.

    ``protocol="paper"`` (the CineBrain authors' choices) goes through the release form: the
    release at ``raw/release/sub-000N`` (simulated in that form when absent) is imported into
    ``raw/imported/sub_000N`` with ``import_cinebrain`` and prepared with normalize=all, split=tail."""
    from eeg2fmri.data.cinebrain import subject_dirname
    from eeg2fmri.data.prepare import prepare
    from eeg2fmri.data.simulate import simulate

    if protocol == "paper":
        return _ensure_release_subject(subject, scale, raw, prepared)
    folder = raw / subject_dirname(subject)
    if not folder.exists():
        say(f"simulating subject {subject} ({scale.simulate}, grayordinates {scale.grayordinates}) into {raw}")
        simulate(
            out_dir=str(raw),
            subjects=[subject],
            scale=scale.simulate,
            grayordinates=scale.grayordinates,
            progress=False,
        )
    return prepare(folder, prepared, progress=False)


def _ensure_release_subject(subject: int, scale: Scale, raw: Path, prepared: Path) -> Path:
    from eeg2fmri.data.prepare import PrepareOptions, prepare
    from eeg2fmri.data.release import import_cinebrain
    from eeg2fmri.data.simulate import release_dirname, simulate

    release = raw / "release"
    if not (release / release_dirname(subject)).exists() and not (release / f"sub_{subject:04d}").exists():
        say(f"simulating subject {subject} in the CineBrain release form ({scale.simulate}) into {release}")
        simulate(
            out_dir=str(release),
            subjects=[subject],
            scale=scale.simulate,
            grayordinates=scale.grayordinates,
            form="release",
            progress=False,
        )
    (folder,) = import_cinebrain(str(release), [subject], str(raw / "imported"), overwrite=True)
    return prepare(folder, prepared, PrepareOptions(normalize="all", split="tail"), progress=False)
