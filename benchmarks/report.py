"""Turn result rows into a terminal table, a summary against the targets, JSON, CSV and plots.

Two kinds of rows: loader rows (the loader alone, each against the decode ceiling of its
device: ``cv2.imdecode`` x cores for CPU rows, DALI's mixed decoder for GPU rows) and, with
``--train``, training rows (each loader feeding a training step, against the same model on
synthetic data already on the device: the busy fraction).
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import json
import os
import platform
import re
import sys
from typing import Any

__all__ = ["CSV_COLUMNS", "TRAIN_CSV_COLUMNS", "machine_info", "summarize", "summarize_training",
           "format_ceilings", "format_table", "format_summary", "format_training_table",
           "format_training_summary",
           "write_json", "write_csv", "write_plots", "write_training_plot", "write_all"]

CSV_COLUMNS = [
    "loader", "family", "source", "device", "threads", "batch_size", "image_size", "status",
    "images_per_s", "images_per_s_min", "images_per_s_max", "images_per_s_iqr", "mb_per_s",
    "first_batch_s", "host_us_per_image", "gil_us_per_image", "feed_ceiling_images_per_s", "peak_rss_mb",
    "steady_pss_mb", "cpu_cores_used", "cpu_util_pct", "gpu_mem_peak_mb", "torch_cuda_peak_mb",
    "ceiling_kind", "ceiling_images_per_s", "ceiling_fraction",
    "images_timed", "timed_s", "output", "note",
]
TRAIN_CSV_COLUMNS = [
    "loader", "family", "source", "device", "train_model", "train_device", "threads", "batch_size",
    "image_size", "status", "images_per_s", "images_per_s_min", "images_per_s_max",
    "images_per_s_iqr", "synthetic_images_per_s", "busy_fraction", "loader_images_per_s",
    "first_batch_s", "host_us_per_image", "feed_ceiling_images_per_s", "peak_rss_mb",
    "cpu_util_pct", "gpu_mem_peak_mb", "torch_cuda_peak_mb", "images_timed", "timed_s", "output",
    "note",
]
BASELINE = "torchvision"
DALI_OWN = "dali-file"
DALI_OWN_GPU = "dali-file-gpu"
SYNTHETIC = "synthetic"
HOST_TARGET_US = 40.0  # DESIGN.md section 5: the iterating thread's CPU per image
GPU_CEILING_TARGET = 0.9  # every fastload GPU store kind >= 90% of the decode ceiling
# Busy-fraction targets (DESIGN.md section 5); other models are reported without one.
TRAIN_TARGETS = {"resnet50": 0.95, "resnet18": 0.85}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(cores: int) -> dict[str, Any]:
    """Where and with what the figures were taken."""
    import torch

    versions = {d: _version(d) for d in ("fastload", "torch", "torchvision", "opencv-python-headless",
                                         "nvidia-dali-cuda130", "nvidia-dali-cuda120", "lmdb", "h5py")}
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "cpu": _cpu_model(), "usable_cores": cores, "os_cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": {k: v for k, v in versions.items() if v}}


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def _best(rows: list[dict[str, Any]], pick: Any) -> dict[str, Any] | None:
    candidates = [r for r in _ok(rows) if pick(r)]
    return max(candidates, key=lambda r: r["images_per_s"]) if candidates else None


def _is_fastload(row: dict[str, Any]) -> bool:
    return str(row.get("family", "")).startswith("fastload")


def _row_ceiling(row: dict[str, Any], ceiling: dict[str, Any] | None,
                 gpu_ceiling: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """The ceiling a row is held to: the GPU decoder's for GPU rows (never the CPU's)."""
    if row.get("device") == "cuda":
        from .ceilings import gpu_ceiling_for

        limit = gpu_ceiling_for(gpu_ceiling, row["batch_size"])
        return limit, "gpu" if limit else None
    limit = ceiling["ceiling_images_per_s"] if ceiling else None
    return limit, "cpu" if limit else None


def summarize(rows: list[dict[str, Any]], ceiling: dict[str, Any] | None,
              gpu_ceiling: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each loader's best, every fastload loader (CPU and GPU) against the baseline, DALI's
    reader, its device's ceiling and the host-cost target.

    Adds ``ceiling_kind``, ``ceiling_images_per_s`` and ``ceiling_fraction`` to every measured
    row (in place).
    """
    for r in _ok(rows):
        limit, kind = _row_ceiling(r, ceiling, gpu_ceiling)
        r.update(ceiling_kind=kind, ceiling_images_per_s=limit,
                 ceiling_fraction=r["images_per_s"] / limit if limit else None)
    best = {name: _best(rows, lambda r, n=name: r["loader"] == n)
            for name in dict.fromkeys(r["loader"] for r in rows)}
    best = {k: v for k, v in best.items() if v}
    ours = _best(rows, lambda r: _is_fastload(r) and r["device"] == "cpu")
    ours_gpu = _best(rows, lambda r: _is_fastload(r) and r["device"] == "cuda")
    summary: dict[str, Any] = {
        "best_per_loader": {k: _brief(v) for k, v in best.items()},
        "ceiling_images_per_s": ceiling["ceiling_images_per_s"] if ceiling else None,
        "gpu_ceiling_images_per_s": {batch: entry["ceiling_images_per_s"] for batch, entry
                                     in (gpu_ceiling or {}).get("by_batch_size", {}).items()} or None,
        "fastload_best_cpu": _brief(ours) if ours else None,
        "fastload_best_gpu": _brief(ours_gpu) if ours_gpu else None,
        "fastload_rows": _fastload_rows(rows, best),
    }
    for key, name in (("vs_baseline", BASELINE), ("vs_dali_file", DALI_OWN)):
        if ours and name in best:
            summary[f"fastload_{key}"] = ours["images_per_s"] / best[name]["images_per_s"]
    for key, name in (("gpu_vs_baseline", BASELINE), ("gpu_vs_dali_file_gpu", DALI_OWN_GPU)):
        if ours_gpu and name in best:
            summary[f"fastload_{key}"] = ours_gpu["images_per_s"] / best[name]["images_per_s"]
    targets = _targets(summary, best, ours, ours_gpu)
    if targets:
        summary["targets"] = targets
    return summary


def _fastload_rows(rows: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
    """Every measured fastload loader: its best row, and its worst host cost over its rows."""
    out = {}
    for name, row in best.items():
        if not _is_fastload(row):
            continue
        costs = [r["host_us_per_image"] for r in _ok(rows)
                 if r["loader"] == name and r.get("host_us_per_image") is not None]
        out[name] = {**_brief(row), "max_host_us_per_image": max(costs) if costs else None}
    return out


def _targets(summary: dict[str, Any], best: dict[str, Any], ours: dict[str, Any] | None,
             ours_gpu: dict[str, Any] | None) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    if ours:
        targets["beats_2.5x_baseline"] = (summary.get("fastload_vs_baseline", 0) >= 2.5
                                          if BASELINE in best else None)
        targets["beats_dali_file"] = (summary.get("fastload_vs_dali_file", 0) > 1
                                      if DALI_OWN in best else None)
    if ours_gpu:
        targets["gpu_beats_dali_file_gpu"] = (summary.get("fastload_gpu_vs_dali_file_gpu", 0) >= 1
                                              if DALI_OWN_GPU in best else None)
        fractions = [r["ceiling_fraction"] for r in summary["fastload_rows"].values()
                     if r["device"] == "cuda"]
        targets["gpu_every_store_90pct_of_ceiling"] = (
            all(f >= GPU_CEILING_TARGET for f in fractions) if None not in fractions else None)
    costs = [r["max_host_us_per_image"] for r in summary["fastload_rows"].values()]
    if costs and None not in costs:
        targets["host_le_40us_per_image"] = max(costs) <= HOST_TARGET_US
    return targets


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("loader", "device", "threads", "batch_size", "images_per_s",
                                    "images_per_s_min", "images_per_s_max", "ceiling_kind",
                                    "ceiling_fraction", "host_us_per_image",
                                    "feed_ceiling_images_per_s", "first_batch_s",
                                    "gpu_mem_peak_mb", "busy_fraction", "synthetic_images_per_s")
            if k in row}


def summarize_training(rows: list[dict[str, Any]], loader_rows: list[dict[str, Any]] | None = None,
                       model: str | None = None) -> dict[str, Any]:
    """Each training row against the synthetic-data rate of the same model, batch size and
    image size (``busy_fraction``: how busy the loader keeps the model), and beside the same
    loader's rate alone where the loader rows were taken at the same image size.

    The synthetic reference may have been measured more than once (first and last): the
    fastest counts, so drift during the run does not flatter the loaders.

    Adds ``synthetic_images_per_s``, ``busy_fraction`` and ``loader_images_per_s`` to the
    measured rows (in place).
    """
    synthetic: dict[tuple[int, int], float] = {}
    for r in _ok(rows):
        if r["loader"] == SYNTHETIC:
            key = (r["batch_size"], r["image_size"])
            synthetic[key] = max(synthetic.get(key, 0.0), r["images_per_s"])
    alone = {(r["loader"], r["threads"], r["batch_size"], r["image_size"]): r["images_per_s"]
             for r in _ok(loader_rows or [])}
    for r in _ok(rows):
        reference = synthetic.get((r["batch_size"], r["image_size"]))
        r.update(synthetic_images_per_s=reference,
                 busy_fraction=r["images_per_s"] / reference if reference else None,
                 loader_images_per_s=alone.get((r["loader"], r["threads"], r["batch_size"],
                                                r["image_size"])))
    measured = [r for r in rows if r["loader"] != SYNTHETIC]
    best = {name: _best(measured, lambda r, n=name: r["loader"] == n)
            for name in dict.fromkeys(r["loader"] for r in measured)}
    best = {k: v for k, v in best.items() if v}
    ours = _best(measured, _is_fastload)
    target = TRAIN_TARGETS.get(model or "")
    summary: dict[str, Any] = {
        "model": model, "train_device": next((r.get("train_device") for r in rows), None),
        "synthetic_images_per_s": {f"batch {b} size {s}": v for (b, s), v in synthetic.items()},
        "best_per_loader": {k: _brief(v) for k, v in best.items()},
        "fastload_best": _brief(ours) if ours else None,
        "target_busy_fraction": target,
    }
    if ours and BASELINE in best:
        summary["fastload_vs_baseline"] = ours["images_per_s"] / best[BASELINE]["images_per_s"]
    if ours and target is not None and ours.get("busy_fraction") is not None:
        summary["meets_target"] = ours["busy_fraction"] >= target
    return summary


def _fmt(value: Any, spec: str) -> str:
    if value is None:  # a dash as wide as the number would be
        return format("-", re.sub(r"(\.\d+)?f$", "", spec))
    return format(value, spec)


def _kilo(value: float | None) -> str:
    """A rate in a narrow column: 950, 12.3k, 230k."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value:.0f}"
    return f"{value / 1000:.1f}k" if value < 100_000 else f"{value / 1000:.0f}k"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def _table(head: str, rows: list[dict[str, Any]], cells: Any) -> str:
    """``head``, a rule, then one line per row: its loader, threads and batch size, then
    ``cells(row)`` for a measured row, or its status and reason for a skipped or failed one."""
    lines = [head, "-" * len(head)]
    for r in rows:
        where = f"{r['loader']:<24} {_fmt(r.get('threads'), '>3')} {_fmt(r.get('batch_size'), '>5')}"
        if r.get("status") != "ok":
            lines.append(f"{where} {r.get('status', '?')}: {r.get('note', '')}")
        else:
            lines.append(" ".join([where, *cells(r)]))
    return "\n".join(lines)


def _spread(r: dict[str, Any], width: int) -> str:
    spread = f"{r['images_per_s_min']:.0f}-{r['images_per_s_max']:.0f}"
    return f"{spread:>{width}}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table, one line per row, skipped and failed rows with their reason.

    ``us/img``: the iterating thread's CPU per image; ``GIL us``: the GIL's time per image over every
    thread of the loader's process (``--gil-seconds``; "-" when not sampled); ``feed/s``: the rate
    the iterating thread allows; ``ceil%``: of the ceiling of the row's device (GPU rows: DALI's
    mixed decoder).
    """
    head = (f"{'loader':<24} {'thr':>3} {'batch':>5} {'img/s':>7} {'min-max':>13} {'MB/s':>6} "
            f"{'1st(s)':>6} {'us/img':>6} {'GIL us':>6} {'feed/s':>6} {'RSS MB':>7} {'GPU MB':>6} {'CPU%':>5} "
            f"{'ceil%':>5}")
    return _table(head, rows, lambda r: [
        f"{r['images_per_s']:>7.0f}", _spread(r, 13), _fmt(r.get("mb_per_s"), ">6.1f"),
        _fmt(r.get("first_batch_s"), ">6.2f"), _fmt(r.get("host_us_per_image"), ">6.0f"),
        _fmt(r.get("gil_us_per_image"), ">6.0f"),
        f"{_kilo(r.get('feed_ceiling_images_per_s')):>6}", _fmt(r.get("peak_rss_mb"), ">7.0f"),
        _fmt(r.get("gpu_mem_peak_mb"), ">6.0f"), _fmt(r.get("cpu_util_pct"), ">5.0f"),
        f"{_percent(r.get('ceiling_fraction')):>5}"])


def format_training_table(rows: list[dict[str, Any]]) -> str:
    """Training rows: training img/s, the synthetic reference and the busy fraction."""
    head = (f"{'loader':<24} {'thr':>3} {'batch':>5} {'train/s':>7} {'min-max':>11} "
            f"{'synth/s':>7} {'busy%':>5} {'alone/s':>7} {'1st(s)':>6} {'us/img':>6} "
            f"{'feed/s':>6} {'GPU MB':>6} {'CPU%':>5}")
    return _table(head, rows, lambda r: [
        f"{r['images_per_s']:>7.0f}", _spread(r, 11),
        _fmt(r.get("synthetic_images_per_s"), ">7.0f"), f"{_percent(r.get('busy_fraction')):>5}",
        _fmt(r.get("loader_images_per_s"), ">7.0f"), _fmt(r.get("first_batch_s"), ">6.2f"),
        _fmt(r.get("host_us_per_image"), ">6.0f"),
        f"{_kilo(r.get('feed_ceiling_images_per_s')):>6}",
        _fmt(r.get("gpu_mem_peak_mb"), ">6.0f"), _fmt(r.get("cpu_util_pct"), ">5.0f")])


def format_ceilings(ceiling: dict[str, Any] | None, gpu_ceiling: dict[str, Any] | None) -> list[str]:
    """One line for the CPU decode ceiling, one per batch size for the GPU's."""
    lines = []
    if ceiling:
        lines.append(f"CPU decode ceiling: {ceiling['decode_per_core_images_per_s']:.0f} img/s per "
                     f"core x {ceiling['cores']} cores = {ceiling['ceiling_images_per_s']:.0f} img/s "
                     f"({ceiling['method']})")
    if gpu_ceiling and "error" in gpu_ceiling:
        lines.append(f"GPU decode ceiling: not measured ({gpu_ceiling['error']})")
    elif gpu_ceiling:
        for batch, entry in gpu_ceiling["by_batch_size"].items():
            splits = ", ".join(f"{load}: {rate:.0f}" for load, rate in entry["by_hw_decoder_load"].items())
            lines.append(f"GPU decode ceiling at batch {batch}: {entry['ceiling_images_per_s']:.0f} "
                         f"img/s (hw_decoder_load {entry['best_hw_decoder_load']:g}; by split: "
                         f"{splits}; {gpu_ceiling['threads']} threads, decode only)")
    return lines


def format_summary(summary: dict[str, Any], ceiling: dict[str, Any] | None,
                   gpu_ceiling: dict[str, Any] | None = None) -> str:
    lines = format_ceilings(ceiling, gpu_ceiling)
    for name, b in summary["best_per_loader"].items():
        frac = b.get("ceiling_fraction")
        lines.append(f"best {name:<24} {b['images_per_s']:>7.0f} img/s "
                     f"(threads {b['threads']}, batch {b['batch_size']})"
                     + (f", {frac:.0%} of the {b['ceiling_kind'].upper()} ceiling" if frac is not None else ""))
    rows = summary.get("fastload_rows") or {}
    if not rows:
        lines.append("fastload: no fastload loader was measured (see the skipped rows)")
        return "\n".join(lines)
    for name, b in rows.items():  # the names say "fastload-..." already
        host = b.get("host_us_per_image")
        worst = b.get("max_host_us_per_image")
        lines.append(f"{name:<28} {b['images_per_s']:>7.0f} img/s on {b['device']}"
                     + (f", host thread {host:.0f} us/img (feed ceiling "
                        f"{_kilo(b.get('feed_ceiling_images_per_s'))} img/s; worst {worst:.0f} us: "
                        f"{_mark(worst <= HOST_TARGET_US)} the target <= {HOST_TARGET_US:.0f})"
                        if host is not None else ""))
    targets = summary.get("targets") or {}
    for key, best_key, label, target in (
            ("fastload_vs_baseline", "fastload_best_cpu", "the torchvision baseline", "beats_2.5x_baseline"),
            ("fastload_vs_dali_file", "fastload_best_cpu", "DALI's own file reader", "beats_dali_file"),
            ("fastload_gpu_vs_baseline", "fastload_best_gpu", "the torchvision baseline", None),
            ("fastload_gpu_vs_dali_file_gpu", "fastload_best_gpu", "DALI's own file reader on the GPU",
             "gpu_beats_dali_file_gpu")):
        if key in summary:
            met = targets.get(target) if target else None
            verdict = "" if met is None else f": {_mark(met)} the target ({TARGET_WORDS[target]})"
            lines.append(f"best fastload on {summary[best_key]['device']} "
                         f"({summary[best_key]['loader']}) vs {label}: {summary[key]:.2f}x{verdict}")
    return "\n".join(lines)


TARGET_WORDS = {"beats_2.5x_baseline": ">= 2.5x", "beats_dali_file": "> 1x", "gpu_beats_dali_file_gpu": ">= 1x"}


def _mark(met: bool) -> str:
    return "meets" if met else "MISSES"


def format_training_summary(summary: dict[str, Any]) -> str:
    where = summary.get("train_device") or "?"
    lines = [f"training {summary['model']} on {where}"
             + (" (bf16 autocast, channels_last)" if where == "cuda" else " (float32)")]
    for key, rate in summary["synthetic_images_per_s"].items():
        lines.append(f"synthetic data (no loader), {key}: {rate:.0f} img/s")
    if not summary["synthetic_images_per_s"]:
        lines.append("synthetic data: not measured (see its row): no busy fractions")
    for name, b in summary["best_per_loader"].items():
        busy = b.get("busy_fraction")
        lines.append(f"best {name:<24} {b['images_per_s']:>7.0f} img/s (threads {b['threads']}, "
                     f"batch {b['batch_size']})" + (f", {busy:.0%} busy" if busy is not None else ""))
    ours, target = summary.get("fastload_best"), summary.get("target_busy_fraction")
    if ours and ours.get("busy_fraction") is not None:
        goal = f" (target >= {target:.0%} for {summary['model']})" if target is not None else ""
        lines.append(f"fastload best ({ours['loader']}): {ours['busy_fraction']:.0%} of the "
                     f"synthetic-data speed{goal}")
    if "fastload_vs_baseline" in summary:
        lines.append(f"fastload best vs torchvision baseline in training: "
                     f"{summary['fastload_vs_baseline']:.2f}x")
    return "\n".join(lines)


def write_json(path: str, report: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)


def write_csv(path: str, rows: list[dict[str, Any]], columns: list[str] = CSV_COLUMNS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _plot_axis(ax: Any, rows: list[dict[str, Any]], x_key: str) -> None:
    for loader in dict.fromkeys(r["loader"] for r in rows):
        points = sorted((r for r in rows if r["loader"] == loader), key=lambda r: r[x_key])
        xs = [r[x_key] for r in points]
        ys = [r["images_per_s"] for r in points]
        err = [[y - r["images_per_s_min"] for y, r in zip(ys, points)],
               [r["images_per_s_max"] - y for y, r in zip(ys, points)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=loader)
    ax.set_ylabel("images/s (median, bars: min-max)")
    ax.grid(True, alpha=0.3)


def _pick(values: list[int], preferred: int) -> int:
    return preferred if preferred in values else sorted(values)[len(values) // 2]


def write_plots(folder: str, rows: list[dict[str, Any]], ceiling: dict[str, Any] | None) -> list[str]:
    """throughput_vs_threads.png (at batch 64, or the middle batch size) and
    throughput_vs_batch_size.png (at the most threads), each only where that axis has two values
    or more (a line through one point says nothing); throughput_by_loader.png (a bar per loader,
    at those threads and batch size) always. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(rows)
    if not ok:
        return []
    batch = _pick(sorted({r["batch_size"] for r in ok}), 64)
    threads = max(r["threads"] for r in ok)
    written = [_bar_plot(plt, folder, [r for r in ok if r["batch_size"] == batch and r["threads"] == threads],
                         f"throughput by loader ({threads} threads, batch {batch})")]
    for name, x_key, subset, title in (
        ("throughput_vs_threads.png", "threads", [r for r in ok if r["batch_size"] == batch],
         f"throughput vs threads (batch {batch})"),
        ("throughput_vs_batch_size.png", "batch_size", [r for r in ok if r["threads"] == threads],
         f"throughput vs batch size ({threads} threads)"),
    ):
        if len({r[x_key] for r in subset}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(10, 5))
        _plot_axis(ax, subset, x_key)
        if ceiling and x_key == "threads":
            xs = sorted({r["threads"] for r in subset})
            per_core, cores = ceiling["decode_per_core_images_per_s"], ceiling["cores"]
            ax.plot(xs, [per_core * min(x, cores) for x in xs], "k--", marker="_", markersize=16,
                    label="decode ceiling (1 core x min(threads, cores))")
        if x_key == "batch_size":
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r[x_key] for r in subset}), [str(v) for v in sorted({r[x_key] for r in subset})])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)  # after every line is drawn: fixing it earlier freezes the top
        ax.set_xlabel(x_key.replace("_", " "))
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: no overlap
        fig.tight_layout()
        path = os.path.join(folder, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _bar_plot(plt: Any, folder: str, rows: list[dict[str, Any]], title: str) -> str:
    """throughput_by_loader.png: one bar per loader (median, min-max whiskers)."""
    fig, ax = plt.subplots(figsize=(10, 5))
    names = [r["loader"] for r in rows]
    rates = [r["images_per_s"] for r in rows]
    err = [[r["images_per_s"] - r["images_per_s_min"] for r in rows],
           [r["images_per_s_max"] - r["images_per_s"] for r in rows]]
    ax.barh(names, rates, xerr=err, capsize=3, color="tab:blue")
    for y, r in enumerate(rows):  # the median, right of its whisker
        ax.text(r["images_per_s_max"], y, f"  {r['images_per_s']:.0f}", va="center", fontsize=8)
    ax.invert_yaxis()  # the first loader on top, as in the table
    ax.set_xlabel("images/s (median, whiskers: min-max)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(folder, "throughput_by_loader.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_training_plot(folder: str, rows: list[dict[str, Any]]) -> list[str]:
    """training_vs_synthetic.png: training img/s per loader (one bar per batch size, at the
    most threads, busy % on top) against the model's synthetic-data speed (dashed lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(rows)
    measured = [r for r in ok if r["loader"] != SYNTHETIC]
    if not ok:
        return []
    threads = max((r["threads"] for r in measured), default=None)
    batches = sorted({r["batch_size"] for r in ok})
    names = list(dict.fromkeys(r["loader"] for r in measured))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(names) + 3), 5))
    width = 0.8 / len(batches)
    for i, batch in enumerate(batches):
        color = f"C{i}"
        picked = {r["loader"]: r for r in measured if r["batch_size"] == batch and r["threads"] == threads}
        xs = [n + (i - (len(batches) - 1) / 2) * width for n in range(len(names))]
        ys = [picked[name]["images_per_s"] if name in picked else 0 for name in names]
        bars = ax.bar(xs, ys, width, color=color, label=f"batch {batch}")
        for bar, name in zip(bars, names):
            busy = picked.get(name, {}).get("busy_fraction")
            if busy is not None:
                ax.annotate(f"{busy:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
        reference = max((r["images_per_s"] for r in ok
                         if r["loader"] == SYNTHETIC and r["batch_size"] == batch), default=None)
        if reference is not None:  # the faster of its measurements, as the busy fractions use
            ax.axhline(reference, color=color, linestyle="--",
                       label=f"synthetic data, batch {batch} ({reference:.0f} img/s)")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("training images/s (median; label: busy % of synthetic)")
    model = next((r.get("train_model") for r in rows if r.get("train_model")), "?")
    device = next((r.get("train_device") for r in rows if r.get("train_device")), "?")
    ax.set_title(f"training {model} on {device}, fed by each loader (threads={threads})")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    path = os.path.join(folder, "training_vs_synthetic.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def write_all(folder: str, report: dict[str, Any]) -> list[str]:
    """results.json, results.csv and the plots under ``folder`` (with training: training.csv
    and training_vs_synthetic.png too); returns the paths."""
    os.makedirs(folder, exist_ok=True)
    json_path, csv_path = os.path.join(folder, "results.json"), os.path.join(folder, "results.csv")
    write_json(json_path, report)
    written = [json_path]
    if report["results"]:
        write_csv(csv_path, report["results"])
        written += [csv_path, *write_plots(folder, report["results"], report.get("ceiling"))]
    training = report.get("training")
    if training:
        train_csv = os.path.join(folder, "training.csv")
        write_csv(train_csv, training["results"], TRAIN_CSV_COLUMNS)
        written += [train_csv, *write_training_plot(folder, training["results"])]
    return written
