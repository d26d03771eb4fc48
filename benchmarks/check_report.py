"""The GPU check's report: every target met or not, and the markdown tables (benchmarks/gpu_check.py).

Targets (DESIGN.md section 5, issue "The GPU path proven on the H200"): each encoded store kind
>= 90% of the nvJPEG decode ceiling of the same files in the same run, raw stores >= the encoded
LMDB rate, fastload LMDB >= DALI readers.file at every batch size, ResNet-50 fed at >= 95% and
ResNet-18 at >= 85% of their data-free speed, a cheap @op and a @batch_op each <= 15% of the
preset's throughput, the iterating thread <= 40 us and the GIL <= 60 us per image, the first batch
after a broken-off pass < 0.3 s, and with CUDA hidden fastload >= readers.file.
"""

from __future__ import annotations

import re
from typing import Any

from .ceilings import gpu_ceiling_for
from .report import GPU_CEILING_TARGET, HOST_TARGET_US, TRAIN_TARGETS

__all__ = ["GIL_TARGET_US", "markdown", "percent", "pytest_summary", "row_line", "targets"]

GIL_TARGET_US = 60.0
RESTART_TARGET_S = 0.3
CUSTOM_OP_TARGET = 0.15
CHEAP_OPS = ("+ 255 - x @op at the end", "+ 255 - x @batch_op")
STORES = ("lmdb", "hdf5", "lmdb-raw")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _num(value: Any, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


# --- pytest output ----------------------------------------------------------------------------


_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)")


def pytest_summary(output: str) -> dict[str, Any]:
    """pytest's closing line and counts, the failed tests' names; for a run stopped before its
    closing line, the counts of its progress characters so far."""
    lines = output.splitlines()
    failures = [ln.split(" ", 1)[1] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    closing = next((ln.strip("= ") for ln in reversed(lines) if _COUNT.search(ln) and " in " in ln), "")
    if closing:
        counts = {word: int(n) for n, word in _COUNT.findall(closing)}
        return {"line": closing, "counts": counts, "failures": failures[:60]}
    progress = "".join(re.sub(r"\s*\[\s*\d+%\]\s*$", "", ln) for ln in lines
                       if re.fullmatch(r"[.sFExX]+(\s*\[\s*\d+%\])?", ln.strip()))
    counts = {"passed": progress.count("."), "failed": progress.count("F"),
              "errors": progress.count("E"), "skipped": progress.count("s")}
    line = "stopped before the end: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return {"line": line, "counts": counts, "failures": failures[:60]}


# --- rows -------------------------------------------------------------------------------------


def row_line(row: dict[str, Any]) -> str:
    """One progress line for a measured (or failed) row."""
    where = f"  {row.get('loader')} threads={row.get('threads')} batch={row.get('batch_size')}"
    if row.get("status") != "ok":
        return f"{where}: {row.get('status')}: {row.get('note')}"
    gil = row.get("gil_us_per_image")
    return (f"{where}: {row['images_per_s']:.0f} img/s, first batch {row['first_batch_s']:.2f} s, "
            f"{row['host_us_per_image']:.0f} us/img on the iterating thread"
            + (f", GIL {gil:.0f} us/img" if gil is not None else "")
            + (f" ({row['gil_note']})" if row.get("gil_note") else ""))


def _ok(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [r for r in rows or [] if r.get("status") == "ok"]


def _by_loader_batch(rows: list[dict[str, Any]] | None) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["loader"], r["batch_size"]): r for r in _ok(rows)}


def _names(device: str) -> dict[str, str]:
    suffix = "-gpu" if device == "cuda" else ""
    return {"dali": "dali-file" + suffix, **{s: f"fastload-dali-{s}{suffix}" for s in STORES}}


# --- targets ----------------------------------------------------------------------------------


def _target(what: str, measured: str, ok: bool | None) -> dict[str, Any]:
    return {"target": what, "measured": measured, "met": ok}


def _versus(what: str, left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """A reported (not judged) pair of rows: "A vs B img/s, GIL a vs b us/img"."""
    return _target(what, f"{left['images_per_s']:.0f} vs {right['images_per_s']:.0f} img/s, GIL "
                         f"{_num(left.get('gil_us_per_image'))} vs {_num(right.get('gil_us_per_image'))} us/img", None)


def _loader_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    names, rows = _names(report["meta"]["device"]), _by_loader_batch(report.get("loaders"))
    batches = sorted({b for _, b in rows})
    out = []
    ceiling = report.get("ceiling")
    for store in ("lmdb", "hdf5"):
        fractions = {b: rows[(names[store], b)]["images_per_s"] / c for b in batches
                     if (names[store], b) in rows and (c := gpu_ceiling_for(ceiling, b))}
        if fractions:
            out.append(_target(f"{store} >= {GPU_CEILING_TARGET:.0%} of the nvJPEG ceiling",
                               ", ".join(f"batch {b}: {percent(f)}" for b, f in fractions.items()),
                               min(fractions.values()) >= GPU_CEILING_TARGET))
    for other, name, what in (("lmdb-raw", "lmdb", "raw LMDB >= encoded LMDB"),
                              ("lmdb", "dali", "fastload LMDB >= DALI readers.file")):
        ratios = {b: rows[(names[other], b)]["images_per_s"] / rows[(names[name], b)]["images_per_s"]
                  for b in batches if (names[other], b) in rows and (names[name], b) in rows}
        if ratios:
            out.append(_target(what, ", ".join(f"batch {b}: {r:.2f}x" for b, r in ratios.items()),
                               min(ratios.values()) >= 1.0))
    ours = [r for (loader, _), r in rows.items() if loader.startswith("fastload")]
    if ours:
        worst = max(ours, key=lambda r: r["host_us_per_image"])
        out.append(_target(f"iterating thread <= {HOST_TARGET_US:.0f} us/img (fastload rows)",
                           f"worst {worst['host_us_per_image']:.0f} us ({worst['loader']}, batch "
                           f"{worst['batch_size']})", worst["host_us_per_image"] <= HOST_TARGET_US))
    out += _gil_target(ours, f"GIL <= {GIL_TARGET_US:.0f} us/img ({report['meta']['device']})")
    return out


def _gil_target(rows: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    sampled = [r for r in rows if r.get("gil_us_per_image") is not None]
    if not sampled:
        return []
    worst = max(sampled, key=lambda r: r["gil_us_per_image"])
    return [_target(what, ", ".join(f"{r['loader']} {r['gil_us_per_image']:.0f}" for r in sampled),
                    worst["gil_us_per_image"] <= GIL_TARGET_US)]


def _other_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    restart = report.get("restart")
    if restart:
        out.append(_target(f"first batch after a broken-off pass < {RESTART_TARGET_S} s",
                           f"{restart['restart_s']:.3f} s", restart["restart_s"] < RESTART_TARGET_S))
    for model, result in (report.get("training") or {}).items():
        best, goal = (result.get("summary") or {}).get("fastload_best") or {}, TRAIN_TARGETS.get(model)
        if best.get("busy_fraction") is not None:
            out.append(_target(f"{model} fed at >= {percent(goal)} of its data-free speed",
                               f"{percent(best['busy_fraction'])} ({best['images_per_s']:.0f} vs "
                               f"{best['synthetic_images_per_s']:.0f} img/s)",
                               None if goal is None else best["busy_fraction"] >= goal))
    for name, by in ((report.get("op_lists") or {}).get("results") or {}).items():
        ratio = by["fastload dali"]["ratio"]
        out.append(_target(f"op list {name!r}, CUDA hidden: fastload >= 2x torchvision (the 2-core target)",
                           f"{ratio:.2f}x", None))
    custom = (report.get("custom_ops") or {}).get("results", {})
    for name, r in custom.items():
        if name != "train":
            cost = r["overhead_pct"] / 100
            out.append(_target(f"custom op {name!r} <= {CUSTOM_OP_TARGET:.0%} of the preset's rate"
                               if name in CHEAP_OPS else f"custom op {name!r} (reported)",
                               f"costs {percent(cost)} ({r['images_per_s']:.0f} img/s)",
                               cost <= CUSTOM_OP_TARGET if name in CHEAP_OPS else None))
    names, measured = _names("cpu"), _ok(report.get("cpu_only"))
    rows = [r for r in measured if r.get("host_margin") is None]  # the library as it ships
    by = {r["loader"]: r for r in rows}
    for every in (r for r in measured if r.get("host_margin") is not None):
        shared = by.get(every["loader"])
        if shared:
            out.append(_versus(f"CUDA hidden: {every['loader']}, host stage on its measured share of the threads "
                               "and DALI's threads in the background vs on every thread, DALI's at normal priority",
                               shared, every))
    torch_raw, dali_raw = by.get("fastload-torch-lmdb-raw"), by.get(names["lmdb-raw"])
    if torch_raw and dali_raw:  # auto's choice for a store DALI decodes nothing of, on the CPU (RESULTS 25)
        out.append(_versus("CUDA hidden: the raw store on the torch backend vs the DALI backend", torch_raw, dali_raw))
    procs, threads = by.get("fastload-dali-lmdb-procs"), by.get(names["lmdb"])
    if procs and threads:  # the host stage in processes (host_workers) vs on threads (RESULTS 26)
        out.append(_versus("CUDA hidden: the LMDB store's host stage in processes vs on threads", procs, threads))
    if names["dali"] in by:
        for store in STORES:
            if names[store] in by:
                ratio = by[names[store]]["images_per_s"] / by[names["dali"]]["images_per_s"]
                out.append(_target(f"CUDA hidden: fastload {store} >= DALI readers.file",
                                   f"{ratio:.2f}x ({by[names[store]]['images_per_s']:.0f} vs "
                                   f"{by[names['dali']]['images_per_s']:.0f} img/s)", ratio >= 1.0))
    out += _gil_target([r for r in rows if r["loader"].startswith("fastload")],
                       f"GIL <= {GIL_TARGET_US:.0f} us/img (CUDA hidden)")
    return out


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the run has figures for: what it asks, what was measured, met or not (None:
    reported without a target)."""
    return _loader_targets(report) + _other_targets(report)


# --- markdown ---------------------------------------------------------------------------------


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _loader_table(rows: list[dict[str, Any]] | None, ceiling: dict[str, Any] | None,
                  dali: str) -> list[str]:
    by = _by_loader_batch(rows)
    lines = []
    for r in rows or []:
        if r.get("status") != "ok":
            lines.append([r.get("loader", "?"), str(r.get("batch_size", "-")), r.get("status", "?"),
                          str(r.get("note", ""))[:120], *["-"] * 8])
            continue
        c = gpu_ceiling_for(ceiling, r["batch_size"])
        base = by.get((dali, r["batch_size"]))
        lines.append([r["loader"] + (" (host stage as before sharing the CPU)" if r.get("host_margin") is not None else ""),
                      str(r["batch_size"]), f"{r['images_per_s']:.0f}",
                      f"{r['images_per_s_min']:.0f}-{r['images_per_s_max']:.0f}",
                      percent(r["images_per_s"] / c) if c else "-",
                      f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-",
                      _num(r.get("first_batch_s"), ".2f"), _num(r.get("host_us_per_image")),
                      _num(r.get("gil_us_per_image")), _num(r.get("gpu_mem_peak_mb")),
                      _num(r.get("cpu_cores_used"), ".1f"), _num(r.get("peak_rss_mb"))])
    head = ["loader", "batch", "img/s", "rounds min-max", "of nvJPEG ceiling", "vs readers.file",
            "first batch s", "host us/img", "GIL us/img", "GPU MB peak", "CPU cores", "RSS MB"]
    return _table(head, lines)


def _meta(report: dict[str, Any]) -> list[str]:
    m = report["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    return [f"- GPU: {m.get('gpu') or m.get('cuda') or 'none'}; CPU: {m.get('cpu')}, "
            f"{m.get('usable_cores')} usable cores; loader threads {m.get('threads')}",
            f"- {versions}; DALI {m.get('dali') or '-'}; Python {m.get('python')}",
            f"- {m.get('date')}, `{m.get('command')}`, {m.get('wall_s', 0):.0f} s of a "
            f"{m.get('budget_s', 0):.0f} s budget" + (" (**smoke size: not a measurement**)"
                                                     if m.get("smoke") else ""), ""]


def _tests(report: dict[str, Any]) -> list[str]:
    lines = []
    for key, title in (("gpu", "GPU-marked tests"), ("suite", "the rest of the suite")):
        t = (report.get("tests") or {}).get(key)
        if t:
            lines.append(f"- {title} (`{t.get('command')}`): {t.get('line')}")
            lines += [f"  - FAILED {f}" for f in t.get("failures", [])[:30]]
    return lines + [""] if lines else []


def _ceiling(report: dict[str, Any]) -> list[str]:
    c = report.get("ceiling")
    if not c or "by_batch_size" not in c:
        return []
    loads = [f"{x:g}" for x in c.get("hw_decoder_loads", [])]
    rows = [[b, *(f"{v['by_hw_decoder_load'].get(x, 0):.0f}" for x in loads),
             f"{v['ceiling_images_per_s']:.0f} ({v['best_hw_decoder_load']:g})"]
            for b, v in c["by_batch_size"].items()]
    return (["### nvJPEG decode ceiling (DALI mixed decoder alone, img/s)", ""]
            + _table(["batch", *(f"hw_decoder_load {x}" for x in loads), "ceiling (split)"], rows))


def _custom(report: dict[str, Any]) -> list[str]:
    c = (report.get("custom_ops") or {}).get("results")
    if not c:
        return []
    rows = [[n, f"{r['images_per_s']:.0f}", "-" if n == "train" else percent(r["overhead_pct"] / 100),
             f"{r['cpu_ms_per_image']:.2f}", f"{r['host_us_per_image']:.0f}"] for n, r in c.items()]
    return (["### Custom ops (interleaved rounds, batch stage on the loader's device)", ""]
            + _table(["configuration", "img/s", "cost", "CPU ms/img (tree)", "host us/img"], rows))


def _training(report: dict[str, Any]) -> list[str]:
    rows = []
    for model, result in (report.get("training") or {}).items():
        for r in result.get("rows", []):
            if r.get("status") != "ok":
                rows.append([model, r.get("loader", "?"), r.get("status", "?"), "-", "-", "-"])
                continue
            rows.append([model, r["loader"], f"{r['images_per_s']:.0f}",
                         _num(r.get("synthetic_images_per_s")), percent(r.get("busy_fraction")),
                         _num(r.get("host_us_per_image"))])
    if not rows:
        return []
    return (["### Training in the loop (bf16 autocast, channels_last; synthetic = one batch on the device)", ""]
            + _table(["model", "fed by", "train img/s", "synthetic img/s", "busy", "host us/img"], rows))


def _tune(report: dict[str, Any]) -> list[str]:
    t = report.get("tune")
    if not t:
        return []
    rows = [[" ".join(f"{k}={v}" for k, v in trial["settings"].items()) + (" (again)" if trial.get("again") else ""),
             f"{trial['images_per_s']:.0f}" if not trial.get("error") else f"failed: {trial['error']}"]
            for trial in t.get("trials", [])]
    return ([f"### Tuner ({t.get('model')} in the loop): best {t.get('best')}, "
             f"{t.get('best_images_per_s', 0):.0f} img/s, {t.get('gain', 1):.2f}x the defaults", ""]
            + _table(["settings", "training img/s"], rows))


def _op_lists(report: dict[str, Any]) -> list[str]:
    results = (report.get("op_lists") or {}).get("results")
    if not results:
        return []
    rows = [[name, f"{by['torchvision']['images_per_s']:.0f}",
             *(f"{by[who]['images_per_s']:.0f} = {by[who]['ratio']:.2f}x" for who in ("fastload dali", "fastload torch"))]
            for name, by in results.items()]
    return (["### Op lists, CUDA hidden (benchmarks/op_lists.py: the same ops in torchvision v2)", ""]
            + _table(["op list", "torchvision img/s", "fastload DALI", "fastload torch"], rows))


def markdown(report: dict[str, Any]) -> str:
    """The whole report as markdown: machine, targets, steps, then each step's table."""
    m = report["meta"]
    lines = ["# fastload GPU check", "", *_meta(report), "## Targets", ""]
    lines += _table(["target", "measured", "met"], [
        [t["target"], t["measured"], {True: "yes", False: "**no**", None: "-"}[t["met"]]]
        for t in report.get("targets", [])])
    lines += ["## Steps", ""]
    lines += _table(["step", "status", "seconds", "note"], [
        [n, s["status"], f"{s['seconds']:.0f}", str(s["note"]).replace("|", "/")[:300]]
        for n, s in report.get("steps", {}).items()])
    lines += _tests(report) + _ceiling(report)
    if report.get("loaders"):
        lines += [f"### Loaders on the {m['device'].upper()} ({m['threads']} threads, train preset 224, "
                  "float32 NCHW)", ""]
        lines += _loader_table(report["loaders"], report.get("ceiling"), _names(m["device"])["dali"])
    restart = report.get("restart")
    if restart:
        lines += [f"### Restart: first batch {restart['first_batch_s']:.2f} s; after a broken-off "
                  f"pass median {restart['restart_s']:.3f} s "
                  f"({', '.join(f'{w:.3f}' for w in restart['restarts_s'])}); engines built "
                  f"{restart['engines_built']}", ""]
    lines += _custom(report) + _training(report) + _tune(report)
    if report.get("cpu_only"):
        lines += [f"### CUDA hidden ({m['threads']} threads)", ""]
        lines += _loader_table(report["cpu_only"], None, _names("cpu")["dali"])
    lines += _op_lists(report)
    return "\n".join(lines) + "\n"
