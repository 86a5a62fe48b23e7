"""One model experiment of notes/model.md: fit then test through the real CLI, print the scores.

    python tools/model_experiment.py NAME [--data CACHE] [--base configs/demo.yaml] [--epochs N] [CLI overrides ...]

Trains with ``--config BASE`` plus the overrides, validates (and checkpoints) only at the last
epoch, tests ``last.ckpt`` on the test clips and prints V1 / V1+A1 temporal r and whole-brain MSE
of every row ``eeg2fmri test`` wrote (the estimator's, the one-sample row, the noise ceiling).
Runs land in ``runs/experiments/NAME``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from eeg2fmri.cli import main


def run(
    name: str,
    data: str,
    base: str,
    overrides: list[str],
    epochs: int | None,
    test_only: bool = False,
    val_every: int | None = None,
    ckpt: str = "last",
) -> dict:
    out = Path("runs/experiments") / name
    cfg = yaml.safe_load(Path(base).read_text())
    epochs = epochs or cfg.get("trainer", {}).get("max_epochs", 25)
    args = [
        "--config",
        base,
        *overrides,
        "--data.data_path",
        data,
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(out),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.check_val_every_n_epoch",
        str(val_every or epochs),
    ]
    t0 = time.perf_counter()
    if not test_only:
        main(["fit", *args])
    fit_s = time.perf_counter() - t0
    main(["test", *args, "--ckpt_path", str(out / "checkpoints" / f"{ckpt}.ckpt"), "--evaluator.results_dir", str(out)])
    res = json.loads((out / "test_metrics.json").read_text())
    print(f"\n== {name}: fit {fit_s:.0f} s; {res.get('estimator')}; EEG {res.get('eeg_seconds')} s per frame")
    print(f"{'row':<14} {'V1 temporal r':>14} {'V1+A1 temporal r':>17} {'whole MSE':>10} {'whole r':>8}")
    for source, m in res["metrics"].items():
        print(
            f"{source:<14} {m['V1/temporal_r_median']:>14.3f} {m['V1+A1/temporal_r_median']:>17.3f} "
            f"{m['whole/mse']:>10.3f} {m['whole/r']:>8.3f}"
        )
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--data", default="data/x20/prepared/sub_0001.h5")
    ap.add_argument("--base", default="configs/demo.yaml")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--test_only", action="store_true", help="test the run's last.ckpt again (other evaluator options)")
    ap.add_argument(
        "--val_every", type=int, default=None, help="validation period in epochs (default: the last epoch only)"
    )
    ap.add_argument("--ckpt", default="last", choices=["last", "best"], help="checkpoint to test")
    a, overrides = ap.parse_known_args()
    run(a.name, a.data, a.base, [o for o in overrides if o != "--"], a.epochs, a.test_only, a.val_every, a.ckpt)
