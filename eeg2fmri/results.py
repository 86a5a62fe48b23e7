"""Results of a scored run: one row per (source, region), the ``test_metrics.json`` / ``.csv`` files
and the printed table.

``eeg2fmri test`` (the :class:`~eeg2fmri.callbacks.Evaluator`) writes them, ``eeg2fmri table``
prints several runs' files as one table, and ``eeg2fmri evaluate`` prints and writes its scores in
the same rows and columns.
"""

from __future__ import annotations

import json
from pathlib import Path

from eeg2fmri.data.cifti import atomic_write_csv, atomic_write_text

CSV_COLUMNS = (
    "mse",
    "mse_std",
    "r",
    "r_std",
    "cos",
    "cos_std",
    "temporal_r_median",
    "temporal_r_mean",
    "identification_top1",
    "identification_top5",
    "identification_mean_rank",
    "n_windows",
)


def results_rows(results: dict) -> list[dict]:
    """One row per (source, region): source is 'model' (the estimator's prediction), 'model_sample'
    (one DDIM sample) or 'ceiling'."""
    rows = []
    mean = str(results.get("estimator", "")).startswith("posterior mean")
    names = {
        "model": results["method"] + (" (posterior mean)" if mean else ""),
        "model_sample": f"{results['method']} (1 sample)",
        "ceiling": "noise ceiling",
    }
    for source, values in results["metrics"].items():
        regions = sorted(
            {k.split("/")[0] for k in values},
            key=lambda r: ("whole", "V1", "V1+A1", r).index(r) if r in ("whole", "V1", "V1+A1") else 3,
        )
        for region in regions:
            row = {"method": names.get(source, source), "source": source, "region": region}
            row.update({c: values.get(f"{region}/{c}", float("nan")) for c in CSV_COLUMNS})
            rows.append(row)
    return rows


def write_results(results: dict, out_dir: Path) -> None:
    """``test_metrics.json`` (the whole result) and ``test_metrics.csv`` (its rows) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "test_metrics.json", json.dumps(results, indent=2, default=float))
    atomic_write_csv(out_dir / "test_metrics.csv", results_rows(results), ["method", "source", "region", *CSV_COLUMNS])


def format_table(*results: dict) -> str:
    """One table of the rows of one or more ``eeg2fmri test`` results (the noise ceiling once, last),
    with the estimator of each sampling model's rows and the seconds of EEG each row sees."""
    lines = [
        f"{'method':<36} {'EEG s':>5} {'region':<7} {'MSE':>13} {'spatial r':>13} {'cosine':>13} {'temporal r':>10} {'ident top1':>10}",
    ]
    notes = []
    for res in results:
        lines += [_table_line(row, res.get("eeg_seconds")) for row in results_rows(res) if row["source"] != "ceiling"]
        if res.get("sampling"):
            notes.append(f"{res['method']}: {res.get('estimator', '?')}; (1 sample): one DDIM draw")
    first = next((r for r in results if "ceiling" in r["metrics"]), None)
    if first is not None:
        lines += [_table_line(row, None) for row in results_rows(first) if row["source"] == "ceiling"]
    return "\n".join(lines + notes)


def _table_line(row: dict, eeg_seconds: float | None) -> str:
    def pm(k):
        return f"{row[k]:.3f}±{row[k + '_std']:.3f}"

    secs = "–" if eeg_seconds is None else f"{eeg_seconds:.1f}"
    return (
        f"{row['method']:<36} {secs:>5} {row['region']:<7} {pm('mse'):>13} {pm('r'):>13} {pm('cos'):>13} "
        f"{row['temporal_r_median']:>10.3f} {row['identification_top1']:>10.3f}"
    )
