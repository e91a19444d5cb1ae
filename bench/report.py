"""Regenerate the measured figures of the documentation from the JSON the scripts wrote.

Every block of README.md and docs/*.md between the two marker lines

    <!-- results:NAME -->
    <!-- /results:NAME -->

is rewritten from ``docs/results/NAME.json`` by the renderer registered for NAME (:data:`RENDERERS`),
followed by a line naming the machine and the exact command, both read from the JSON. So no figure is
typed by hand: ``make bench-report`` runs the benchmarks, each writes its JSON (``--json``, through
``bench/common.py``'s ``write_results``), and then this script. ``--check`` rewrites nothing: it exits
1 and names every block that differs from what its JSON renders (``tests/test_figures.py`` runs it).

A new block takes one function here, ``NAME.json`` with ``command`` and ``machine`` keys (what
``write_results`` adds), and the two marker lines where the block goes::

    @renderer("demo")
    def demo(r: dict) -> str:
        return md_table(["run", "top-1"], [[run["name"], percent(run["acc1"])] for run in r["runs"]])

    python bench/report.py            # rewrite every block from docs/results/
    python bench/report.py --check    # exit 1 naming each stale block
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "docs/results"  # NAME.json, relative to the root
BLOCK = re.compile(r"^<!-- results:(?P<name>[\w-]+) -->\n(?P<body>.*?)^<!-- /results:(?P=name) -->$", re.M | re.S)
OPENING = re.compile(r"^<!-- results:([\w-]+) -->$", re.M)

Renderer = Callable[[dict], str]
RENDERERS: dict[str, Renderer] = {}
"""NAME -> function(the JSON as a dict) -> Markdown (without the machine and command line, added here)."""


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    """Register the decorated function as the renderer of ``<!-- results:NAME -->`` blocks."""
    def register(fn: Renderer) -> Renderer:
        if name in RENDERERS:
            raise ValueError(f"two renderers for {name!r}")
        RENDERERS[name] = fn
        return fn
    return register


# ---------------------------------------------------------------------------------- formatting
def fixed(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def sig(x: float | None) -> str:
    """About three significant digits: 0.58, 12.9, 3458."""
    if x is None:
        return "-"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def percent(x: float | None, digits: int = 1, sign: bool = False) -> str:
    return "-" if x is None else f"{100 * x:{'+' if sign else ''}.{digits}f}%"


def sci(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def code(text: str) -> str:
    return f"`{text}`"


NUMERIC = re.compile(r"[-+]?\d[\d.,]*(?:e[-+]?\d+)?%?|-")


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table, cells as given: a column of numbers right-aligned, any other left-aligned."""
    right = [bool(rows) and all(NUMERIC.fullmatch(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(m: dict) -> str:
    gpu = f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"
    return (f"{m.get('cpu') or 'unknown CPU'} ({m.get('cpu_cores')} cores, {m.get('torch_threads')} torch threads), "
            f"{gpu}, torch {m.get('torch')}, Python {m.get('python')}, {str(m.get('date', ''))[:10]}")


def provenance(r: dict) -> str:
    return f"Measured on {machine_line(r['machine'])}, by `{r['command']}`."


# ---------------------------------------------------------------------------------- the renderers
@renderer("parity")
def parity(r: dict) -> str:
    rows = [[code(c["model"]), c["output"], c["reference"], sci(c["max_abs_diff"]), sig(c["max_abs_value"])]
            for c in r["comparisons"]]
    s = r["settings"]
    text = md_table(["model", "output", "compared with", "largest difference", "largest value"], rows)
    pk = r["packages"]
    text += (f"\n\n{s['dtype']}, {s['device']}, seed {s['seed']}; hiera-transformer {pk['hiera-transformer']}, "
             f"timm {pk['timm']}.")
    if r.get("mae_loss"):
        m = r["mae_loss"]
        text += (f" MAE loss of {code(m['model'])} with the same mask (ratio {m['mask_ratio']}): "
                 f"ours {m['ours']:.5f}, official {m['official']:.5f}.")
    return text


@renderer("model_speed")
def model_speed(r: dict) -> str:
    s = r["settings"]
    rows = [[code(x["model"]), x["dtype"], x["mode"], fixed(x["ours_ms"]), fixed(x["official_ms"]),
             fixed(x["ours_over_official"], 3), sig(x["ours_img_s"]), sig(x["official_img_s"]), fixed(x["spread"], 2)]
            for x in r["steps"]]
    text = md_table(["model", "dtype", "mode", "ours ms/step", "official ms/step", "ours / official", "ours img/s",
                     "official img/s", "spread"], rows)
    text += (f"\n\nBatch {s['batch_size']}, {s['device_name']}; the median of {s['steps']} timed rounds after "
             f"{s['warmup']} warm-up, ours and official interleaved; spread: slowest / fastest round.")
    if r.get("flops"):
        text += "\n\n" + md_table(
            ["case", "GFLOP/step", "ours TFLOP/s", "official TFLOP/s", "matmul peak TFLOP/s", "ours, share of peak"],
            [[f["case"], fixed(f["gflop_per_step"]), fixed(f["ours_tflop_s"], 3), fixed(f["official_tflop_s"], 3),
              fixed(f["peak_tflop_s"], 3), percent(f["share_of_peak"])] for f in r["flops"]])
        text += (f"\n\nPeak: a {s['peak_size']}x{s['peak_size']} matmul in the same dtype, best of "
                 f"{s['peak_repeats']}; FLOPs of one step counted once (fp32, ours).")
    return text


@renderer("train_throughput")
def train_throughput(r: dict) -> str:
    s = r["settings"]
    rows = [[t["task"], code(t["model"]), sig(t["bare_img_s"]), sig(t["trainer_img_s"]), sig(t["callbacks_img_s"]),
             percent(t["trainer_overhead"], sign=True), percent(t["callbacks_overhead"], sign=True)]
            for t in r["tasks"]]
    text = md_table(["task", "model", "bare img/s", "Trainer img/s", "+ callbacks img/s", "Trainer overhead",
                     "+ callbacks overhead"], rows)
    recipes = "; ".join(
        f"{t['task']}: betas {tuple(t['betas'])}"
        + (f", mask ratio {t['mask_ratio']}" if t.get("mask_ratio") is not None else "")
        + (f", layer decay {t['layer_decay']}" if t.get("layer_decay") is not None else "")
        for t in r["tasks"])
    text += (f"\n\n{s['img_size']} px, batch {s['batch_size']}, {r['tasks'][0]['precision']}, {s['device']}; the "
             f"median of {s['rounds']} x {s['steps']} steps per loop after {s['warmup']} warm-up. Every loop runs "
             f"the module's `training_step` with the optimizer of its `configure_optimizers()` ({recipes}); "
             f"callbacks: {', '.join(s['callbacks'])}.")
    return text


@renderer("video_loader")
def video_loader(r: dict) -> str:
    v, a = r["videos"], r["args"]
    where = re.sub(r" in /\S*", "", v["where"])  # not this machine's temporary folder
    text = (f"{v['count']} videos {'/'.join(v['sizes'])}, {v['kbps_median']:.0f} kbit/s ({where}); "
            f"16x4 clips at 224 px.\n\n")
    text += md_table(["decode only (one process, one thread)", "median ms", "p90 ms", "clips/s"],
                     [[k, fixed(d["median_ms"]), fixed(d["p90_ms"]), sig(d["clips_per_s"])]
                      for k, d in r["decode"].items() if isinstance(d, dict)])
    text += "\n\n" + md_table(["one loader worker", "ms/video", "decode ms", "augment ms", "clips/s per worker"],
                              [[f"{code('data.decoder=' + w['decoder'])} repeated sampling {w['repeated_sampling']}",
                                fixed(w["median_ms"]), fixed(w["decode_ms"]), fixed(w["augment_ms"]),
                                sig(w["clips_per_s"])] for w in r["worker"]])
    text += "\n\n" + md_table([f"DataLoader, {code('data.decoder=' + a['decoder'])}", "clips/s"],
                              [[f"num_workers={x['num_workers']}", sig(x["clips_per_s"])] for x in r["loader"]])
    text += "\n\n" + md_table(["model step", "batch", "ms/step", "model clips/s", "workers needed",
                               f"with {r['verdict'][0]['num_workers']} workers" if r["verdict"] else "bound"],
                              [[f"{code(a['model'])} {x['device']} {x['dtype']}", x["batch"], fixed(x["step_ms"]),
                                sig(x["model_clips_per_s"]), fixed(x["workers_needed"], 2), f"{x['bound']}-bound"]
                               for x in r["verdict"]])
    return text


@renderer("memory")
def memory(r: dict) -> str:
    cases = r["cases"]
    method = next((c.get("method") for c in cases if c.get("method")), "?")
    text = md_table(["case", "step MiB", "with grad_ckpt MiB", "grad_ckpt / without", "grad_ckpt time / without"],
                    [[p["case"], fixed(p["step_mib"], 0), fixed(p["step_mib_grad_ckpt"], 0),
                      fixed(p["memory_ratio"], 2), fixed(p["time_ratio"], 2)] for p in r["grad_ckpt"]])
    smallest = r["scaling"][0]["case"] if r["scaling"] else "-"
    text += "\n\n" + md_table(["case, without grad_ckpt", "ms/step", "ms/sample", "per sample vs. the first"],
                              [[s["case"], fixed(s["ms_per_step"], 0), fixed(s["per_sample_ms"], 0),
                                fixed(s["time_vs_smallest"], 2)] for s in r["scaling"]])
    errors = [c for c in cases if "error" in c]
    text += (f"\n\n{r['device_name']}, {r['dtype']}{' autocast' if r['dtype'] == 'bf16' else ''}"
             f"{', AdamW step included' if r.get('adamw') else ''}; memory: {method}; step time: the median of "
             f"{cases[0]['steps']} steps after {cases[0]['warmup']} warm-up; the first row of the second table is "
             f"{smallest}.")
    if errors:
        text += " Failed: " + "; ".join(f"{c.get('model')} {c.get('size')} px: {c['error']}" for c in errors) + "."
    return text


@renderer("demo")
def demo(r: dict) -> str:
    """README's table of ``make demo``: finetuned (and linear-probed) top-1 from MAE and from scratch,
    with the counts."""
    def top1(run: dict) -> str:
        n = int(run["val/samples"])
        return f"{percent(run['val/acc1'])} ({round(run['val/acc1'] * n)}/{n})"

    rows = [[row["label"], row["mae"]["epochs"], f"**{top1(row['mae'])}**", top1(row["scratch"])]
            for row in r["rows"]]
    mae = r["mae"]
    knn = ""
    if mae.get("knn"):
        m = mae["metrics"]
        knn = (" k-NN top-1 of the encoder on the validation digits during pretraining (k=20, T=0.07): "
               + " -> ".join(f"{t:.1f}% (epoch {e})" for e, t in mae["knn"])
               + f"; {m['knn/seconds']:.1f} s per measurement, {percent(m['knn/cost'])} of that epoch's time")
        epochs = [e for e, _ in mae["knn"] if e]
        every = epochs[1] - epochs[0] if len(epochs) > 1 else None
        knn += f", measured every {every} epochs ({percent(m['knn/cost'] / every)} of the run)." if every else "."
    probe = ""
    if any("linear probe" in row["label"] for row in r["rows"]):
        probe = (" The linear probe (`linprobe.py`, MAE's protocol) trains only a BatchNorm and linear head on the "
                 "frozen encoder; its \"from scratch\" is the same probe on the frozen random initialisation.")
    return (md_table(["training labels", "epochs", "from MAE", "from scratch"], rows)
            + f"\n\nMAE pretraining: {mae['epochs']} epochs (`experiment={mae['experiment']}`), final loss "
              f"{mae['metrics']['train/loss']:.3f}." + knn + probe)


# ---------------------------------------------------------------------------------- the documents
def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@renderer("image_loader")
def image_loader(r: dict) -> str:
    s, parts = r["settings"], []
    for task, row in r["tasks"].items():
        before, timm = row["float32 in the worker"]["cpu_s_per_1000"], row["timm"]["cpu_s_per_1000"]
        parts.append(f"**{task}**\n\n" + md_table(
            ["pipeline", "CPU s per 1,000 samples", "vs float32 in the worker", "vs timm", "bytes per sample"],
            [[name, fixed(x["cpu_s_per_1000"], 2), fixed(x["cpu_s_per_1000"] / before, 2),
              fixed(x["cpu_s_per_1000"] / timm, 2), f"{x['bytes_per_sample']:,}"] for name, x in row.items()]))
        if "device_step_cpu_s_per_1000" in row["ours"]:
            moved = "RandAugment, normalisation, erasing" if task == "finetune" else "normalisation"
            parts[-1] += (f"\n\nOurs on the device ({moved}; batches of 64, timed on "
                          f"this CPU): {fixed(row['ours']['device_step_cpu_s_per_1000'], 2)} s per 1,000 samples.")
    return "\n\n".join(parts) + (
        f"\n\n{s['images']} JPEGs of 500x375 at {s['size']} px, {s['threads']} thread; the median of "
        f"{s['rounds']} interleaved rounds after one warm-up.")


@renderer("video_prepare")
def video_prepare(r: dict) -> str:
    s, v, speed = r["settings"], r["videos"], r["clips_per_s"]
    base = speed["decord original"]
    rows = [[name, fixed(cps, 2), fixed(cps / base, 2)] for name, cps in sorted(speed.items(), key=lambda x: -x[1])]
    where = "your videos" if s["video_dir"] else f"generated, {s['seconds']:g} s each"
    return md_table(["decoder, files", "clips/s per worker", "vs decord on the originals"], rows) + (
        f"\n\n{s['frames']}x{s['rate']} training clips, one thread, the median of {s['reads']} reads per row; "
        f"{s['videos']} originals ({where}) {'/'.join(v['original']['sizes'])} at "
        f"{v['original']['kbps_median']:.0f} kbit/s, prepared to {'/'.join(v['prepared']['sizes'])} at "
        f"{v['prepared']['kbps_median']:.0f} kbit/s in {r['prepare_s']:.0f} s.")


@renderer("export_roundtrip")
def export_roundtrip(r: dict) -> str:
    rows = [[row["size"], row["inputs"], "0 (identical)" if row["max_abs_logit_diff"] == 0 else sci(row["max_abs_logit_diff"]),
             fixed(row["max_abs_logit"], 2), percent(row["top1_agree"])] for row in r["rows"]]
    return (md_table(["input size", "inputs", "max abs logit difference", "max abs logit", "top-1 agreement"], rows)
            + f"\n\nThe exported folder of `{r['checkpoint']}` against the checkpoint itself.")


@renderer("gpu_check")
def gpu_check(r: dict) -> str:
    from gpu_check import markdown  # torch and the models: only for this block

    return markdown(r, page=False)


def render(name: str, root: Path = ROOT) -> str:
    """The body of block NAME: what its renderer makes of ``docs/results/NAME.json``, then the machine
    and the command. Raises ``LookupError`` naming what is missing."""
    path = root / RESULTS / f"{name}.json"
    if name not in RENDERERS:
        raise LookupError(f"no renderer for {name!r} in bench/report.py")
    if not path.is_file():
        raise LookupError(f"no {RESULTS}/{name}.json")
    r = json.loads(path.read_text())
    missing = [k for k in ("command", "machine") if not r.get(k)]
    if missing:
        raise LookupError(f"{RESULTS}/{name}.json has no {' and no '.join(missing)}")
    return "\n" + RENDERERS[name](r).strip("\n") + "\n\n" + provenance(r) + "\n\n"


def updated(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """``text`` with every block re-rendered; and the problems: each block that cannot be rendered,
    and each opening marker without its closing one."""
    problems = []
    closed = {m.group("name") for m in BLOCK.finditer(text)}
    problems += [f"block {n}: no closing <!-- /results:{n} -->" for n in OPENING.findall(text) if n not in closed]

    def one(m: re.Match) -> str:
        try:
            body = render(m.group("name"), root)
        except LookupError as e:
            problems.append(f"block {m.group('name')}: {e}")
            return m.group(0)
        return f"<!-- results:{m.group('name')} -->\n{body}<!-- /results:{m.group('name')} -->"

    return BLOCK.sub(one, text), problems


def stale_blocks(root: Path = ROOT) -> list[str]:
    """One line per block of README.md and docs/*.md that differs from what its JSON renders (or
    cannot be rendered); empty when every block is up to date."""
    out = []
    for path in documents(root):
        text = path.read_text()
        new, problems = updated(text, root)
        rel = path.relative_to(root)
        out += [f"{rel}: {p}" for p in problems]
        old_blocks = {m.group("name"): m.group(0) for m in BLOCK.finditer(text)}
        for m in BLOCK.finditer(new):
            if old_blocks.get(m.group("name")) != m.group(0):
                out.append(f"{rel}: block {m.group('name')} differs from {RESULTS}/{m.group('name')}.json "
                           f"(run python bench/report.py)")
    return out


def regenerate(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """Rewrite every block; returns (the files changed, the problems)."""
    changed, problems = [], []
    for path in documents(root):
        text = path.read_text()
        new, found = updated(text, root)
        problems += [f"{path.relative_to(root)}: {p}" for p in found]
        if new != text:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed, problems


def blocks(root: Path = ROOT) -> dict[str, list[str]]:
    """NAME -> the documents that hold a block of it."""
    found: dict[str, list[str]] = {}
    for path in documents(root):
        for name in OPENING.findall(path.read_text()):
            found.setdefault(name, []).append(str(path.relative_to(root)))
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--check", action="store_true", help="rewrite nothing: exit 1 naming each stale block")
    args = p.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for line in stale:
            print(line)
        if not stale:
            print(f"{sum(len(v) for v in blocks().values())} results blocks, all up to date")
        return 1 if stale else 0
    changed, problems = regenerate()
    for line in problems:
        print(line, file=sys.stderr)
    print(f"rewritten: {', '.join(changed)}" if changed else "every results block was up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
