"""Turn result rows into a terminal table, a summary against the targets, JSON, CSV and plots."""

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

__all__ = ["CSV_COLUMNS", "machine_info", "summarize", "format_table", "format_summary",
           "write_json", "write_csv", "write_plots", "write_all"]

CSV_COLUMNS = [
    "loader", "family", "source", "device", "threads", "batch_size", "image_size", "status",
    "images_per_s", "images_per_s_min", "images_per_s_max", "images_per_s_iqr", "mb_per_s",
    "first_batch_s", "peak_rss_mb", "steady_pss_mb", "cpu_cores_used", "cpu_util_pct", "ceiling_fraction",
    "images_timed", "timed_s", "output", "note",
]
BASELINE = "torchvision"
DALI_OWN = "dali-file"


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


def summarize(rows: list[dict[str, Any]], ceiling: dict[str, Any] | None) -> dict[str, Any]:
    """Each loader's best, fastload's best against the baseline, DALI's reader and the ceiling.

    Adds ``ceiling_fraction`` to every measured row (in place).
    """
    limit = ceiling["ceiling_images_per_s"] if ceiling else None
    for r in _ok(rows):
        r["ceiling_fraction"] = r["images_per_s"] / limit if limit else None
    best = {name: _best(rows, lambda r, n=name: r["loader"] == n)
            for name in dict.fromkeys(r["loader"] for r in rows)}
    best = {k: v for k, v in best.items() if v}
    ours = _best(rows, lambda r: r["family"].startswith("fastload") and r["device"] == "cpu")
    summary: dict[str, Any] = {
        "best_per_loader": {k: _brief(v) for k, v in best.items()},
        "ceiling_images_per_s": limit,
        "fastload_best_cpu": _brief(ours) if ours else None,
    }
    for key, name in (("vs_baseline", BASELINE), ("vs_dali_file", DALI_OWN)):
        if ours and name in best:
            summary[f"fastload_{key}"] = ours["images_per_s"] / best[name]["images_per_s"]
    if ours:
        summary["targets"] = {
            "beats_2.5x_baseline": summary.get("fastload_vs_baseline", 0) >= 2.5 if BASELINE in best else None,
            "beats_dali_file": summary.get("fastload_vs_dali_file", 0) > 1 if DALI_OWN in best else None,
        }
    return summary


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("loader", "threads", "batch_size", "images_per_s",
                                    "images_per_s_min", "images_per_s_max", "ceiling_fraction")}


def _fmt(value: Any, spec: str) -> str:
    if value is None:  # a dash as wide as the number would be
        return format("-", re.sub(r"(\.\d+)?f$", "", spec))
    return format(value, spec)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table, one line per row, skipped and failed rows with their reason."""
    head = (f"{'loader':<24} {'thr':>3} {'batch':>5} {'img/s':>7} {'min-max':>13} {'MB/s':>6} "
            f"{'1st(s)':>6} {'RSS MB':>7} {'CPU%':>5} {'ceil%':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        where = f"{r['loader']:<24} {_fmt(r.get('threads'), '>3')} {_fmt(r.get('batch_size'), '>5')}"
        if r.get("status") != "ok":
            lines.append(f"{where} {r.get('status', '?')}: {r.get('note', '')}")
            continue
        spread = f"{r['images_per_s_min']:.0f}-{r['images_per_s_max']:.0f}"
        frac = r.get("ceiling_fraction")
        lines.append(" ".join([
            where, f"{r['images_per_s']:>7.0f}", f"{spread:>13}", _fmt(r.get("mb_per_s"), ">6.1f"),
            _fmt(r.get("first_batch_s"), ">6.2f"), _fmt(r.get("peak_rss_mb"), ">7.0f"),
            _fmt(r.get("cpu_util_pct"), ">5.0f"), _fmt(None if frac is None else 100 * frac, ">5.0f")]))
    return "\n".join(lines)


def format_summary(summary: dict[str, Any], ceiling: dict[str, Any] | None) -> str:
    lines = []
    if ceiling:
        lines.append(f"decode ceiling: {ceiling['decode_per_core_images_per_s']:.0f} img/s per core "
                     f"x {ceiling['cores']} cores = {ceiling['ceiling_images_per_s']:.0f} img/s "
                     f"({ceiling['method']})")
    for name, b in summary["best_per_loader"].items():
        frac = b.get("ceiling_fraction")
        lines.append(f"best {name:<24} {b['images_per_s']:>7.0f} img/s "
                     f"(threads {b['threads']}, batch {b['batch_size']})"
                     + (f", {frac:.0%} of ceiling" if frac is not None else ""))
    ours = summary.get("fastload_best_cpu")
    if not ours:
        lines.append("fastload: no fastload loader was measured (see the skipped rows)")
        return "\n".join(lines)
    for key, label in (("fastload_vs_baseline", "torchvision baseline (target >= 2.5x)"),
                       ("fastload_vs_dali_file", "DALI's own file reader (target > 1x)")):
        if key in summary:
            lines.append(f"fastload best ({ours['loader']}) vs {label}: {summary[key]:.2f}x")
    return "\n".join(lines)


def write_json(path: str, report: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
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
    throughput_vs_batch_size.png (at the most threads); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(rows)
    if not ok:
        return []
    batch = _pick(sorted({r["batch_size"] for r in ok}), 64)
    threads = max(r["threads"] for r in ok)
    written = []
    for name, x_key, subset, title in (
        ("throughput_vs_threads.png", "threads", [r for r in ok if r["batch_size"] == batch],
         f"throughput vs threads (batch {batch})"),
        ("throughput_vs_batch_size.png", "batch_size", [r for r in ok if r["threads"] == threads],
         f"throughput vs batch size ({threads} threads)"),
    ):
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


def write_all(folder: str, report: dict[str, Any]) -> list[str]:
    """results.json, results.csv and the plots under ``folder``; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    json_path, csv_path = os.path.join(folder, "results.json"), os.path.join(folder, "results.csv")
    write_json(json_path, report)
    write_csv(csv_path, report["results"])
    return [json_path, csv_path, *write_plots(folder, report["results"], report.get("ceiling"))]
