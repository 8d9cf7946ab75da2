"""Peak memory of the main job against the number of images (it must stay flat).

Runs ``experiments.cms`` once per count in a fresh process and reads the peak
resident set size of its main process (``VmHWM``, `cms_jax.data.progress.peak_rss_mb`:
``ru_maxrss`` would carry the launching process's peak over fork and exec). Worker
processes are not reported. Prints a table and writes ``bench_memory.json``: the ratio
of the largest count's peak to the smallest's (target: within 10%).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

# The folder holding cms_jax/ and experiments/: the child imports ``experiments.cms`` from it.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RUNNER = r"""
import json, runpy, sys
sys.argv = ["experiments.cms"] + sys.argv[1:]
try:
    runpy.run_module("experiments.cms", run_name="__main__")
except SystemExit as e:
    if e.code not in (0, None):
        raise
from cms_jax.data.progress import peak_rss_mb
print("RSS_JSON " + json.dumps({"main_mib": peak_rss_mb()}))
"""


@dataclasses.dataclass(frozen=True)
class MemoryBenchConfig:
    """The memory benchmark (the flags of ``experiments/bench_memory.py``).

    ``smoke``: the tiny model, 4 and 8 images.
    """
    model: str = "gender"                 # model name or path
    images: str = ""                      # images (default: UTKFace from the assets)
    counts: tuple[int, ...] = (100, 500)  # numbers of images to compare
    smoke: bool = False


def measure(model: str, images: str, count: int, out: str) -> dict:
    """Peak RSS (MiB) of one run of the main job over ``count`` images, in a fresh process."""
    cmd = [sys.executable, "-c", _RUNNER, f"--model={model}", f"--images={images}", f"--max_images={count}",
           f"--out_dir={out}", "--workers=2"]
    env = dict(os.environ, PYTHONPATH=_ROOT)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"run over {count} images failed:\n{res.stderr[-3000:]}")
    line = next(l for l in res.stdout.splitlines() if l.startswith("RSS_JSON "))
    rss = json.loads(line[len("RSS_JSON "):])
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return {"images": count, "images_done": summary["images_done"], "seconds": summary["seconds"],
            "main_peak_mib": rss["main_mib"]}


def run(cfg: MemoryBenchConfig, out_dir: str) -> dict:
    """One job per count, the table printed, ``out_dir/bench_memory.json`` written; returns its dict."""
    from cms_jax.assets import resolve_dir

    model = "tiny" if cfg.smoke else cfg.model
    counts = [4, 8] if cfg.smoke else [int(c) for c in cfg.counts]
    images = cfg.images or str(resolve_dir("utkface"))
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in counts:
            rows.append(measure(model, images, c, os.path.join(tmp, f"run{c}")))
    ratio = rows[-1]["main_peak_mib"] / rows[0]["main_peak_mib"]
    print(f"{'images':>7} {'done':>5} {'seconds':>8} {'main peak MiB':>14}")
    for r in rows:
        print(f"{r['images']:>7} {r['images_done']:>5} {r['seconds']:>8.1f} {r['main_peak_mib']:>14.1f}")
    print(f"main-process peak RSS ratio {counts[-1]} vs {counts[0]} images: {ratio:.3f} (target <= 1.10)")
    report = {"model": model, "runs": rows, "peak_ratio": ratio}
    with open(os.path.join(out_dir, "bench_memory.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
