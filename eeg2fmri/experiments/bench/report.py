"""The results: the JSON file and the plain-text table ``eeg2fmri bench`` prints."""

from __future__ import annotations

import json
from pathlib import Path

from eeg2fmri.data.cifti import atomic_write_text


def write_json(path: Path, results: dict) -> None:
    """The results as JSON, through a temporary file: an interrupted write keeps the previous file."""
    atomic_write_text(path, json.dumps(results, indent=2, default=float))


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def format_table(r: dict) -> str:
    """The results as a short plain-text table (what ``eeg2fmri bench`` prints)."""
    c, f, ce = r["config"], r["floors"], r["ceilings"]
    m = c["model"]
    lines = [
        f"eeg2fmri bench: scale {r['scale']}, {r['device']} ({r['device_name']}), compile {r['compile']}, "
        f"torch {r['torch_version']}, lightning {r['lightning_version']}",
        f"  V={c['n_vertices']:,} K={c['n_frames']} B={c['batch_size']} {c['precision']}; model d={m['latent_dim']} "
        f"H={m['hidden_size']} depth={m['depth']} ({f['n_params'] / 1e6:.1f} M params)",
        f"  ceilings (measured): matmul {ce['matmul_tflops']:.2f} TFLOP/s ({ce['matmul_dtype']}), copy {ce['copy_gbps']:.1f} GB/s",
        f"  floors per step: {f['flops_per_step'] / 1e9:.2f} GFLOP -> {f['flop_floor_ms']:.3f} ms; "
        f"{f['bytes_per_step'] / 1e9:.3f} GB -> {f['byte_floor_ms']:.3f} ms",
        "",
        f"  {'':<30} {'ms/step':>9} {'mean':>9} {'x ref':>6} {'TFLOP/s':>8} {'%peak':>6} {'GB/s':>8} {'%peak':>6} {'peak mem':>10}",
    ]
    for name, key in (("reference (bare PyTorch)", "reference"), ("Lightning fit step", "lightning")):
        row = r.get(key, {"error": "not run"})
        if "error" in row:
            lines.append(f"  {name:<30} FAILED: {row['error'][:200]}")
            continue
        ratio = row.get("ratio_to_reference", float("nan") if key == "lightning" else 1.0)
        lines.append(
            f"  {name:<30} {row['ms_per_step']:>9.2f} {row['ms_per_step_mean']:>9.2f} {ratio:>6.2f} "
            f"{row['tflops']:>8.3f} {100 * row['tflops'] / ce['matmul_tflops']:>5.1f}% {row['gbps']:>8.1f} "
            f"{100 * row['gbps'] / ce['copy_gbps']:>5.1f}% {_gib(row['peak_memory_bytes']):>10}"
        )
        if key == "lightning":
            lines.append(
                f"  {'  EMA update alone (' + row['ema_device'] + ')':<30} {row['ema_update_ms']:>9.2f}"
                f"   (Lightning's EMAWeightAveraging: {row.get('ema_update_stock_ms', float('nan')):.2f})"
            )
    lines.append("")
    s, ae = r.get("sampler", {"error": "not run"}), r.get("ae_bf16", {"error": "not run"})
    if "error" in s:
        lines.append(f"  sampler FAILED: {s['error'][:200]}")
    else:
        lines.append(
            f"  sampler DDIM-{s['num_inference_steps']}: {s['windows']} windows ({s['frames']} frames) in {s['seconds']:.3f} s = "
            f"{s['frames_per_s']:,.0f} frames/s, {s['tflops']:.3f} TFLOP/s "
            f"({100 * s['tflops'] / ce['matmul_tflops']:.1f}% peak), peak mem {_gib(s['peak_memory_bytes'])}"
        )
    if "error" in ae:
        lines.append(f"  autoencoder bf16 check FAILED: {ae['error'][:200]}")
    else:
        lines.append(
            f"  autoencoder bf16 vs fp32 on {ae['frames']} frames: latents {ae['latent_rel_err']:.2e}, reconstruction "
            f"{ae['recon_rel_err']:.2e} relative error (the fp32 reconstruction's own error against the data: "
            f"{ae['recon_vs_data_rel_err']:.3f})"
        )
    lines += [
        f"  cache load: {r['cache']['bytes'] / 1e9:.3f} GB in {r['cache']['seconds']:.3f} s = {r['cache']['load_gbps']:.2f} GB/s "
        f"({'page cache dropped' if r['cache']['page_cache_dropped'] else 'page cache NOT dropped'}"
        f"{', synthetic' if r['cache']['synthetic'] else ''})",
        f"  peak memory: {r['memory_kind']}; whole run {r['seconds']:.1f} s; results in {r.get('out', '?')}",
    ]
    return "\n".join(lines)
