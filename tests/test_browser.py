"""The report of a ``--smoke`` run, rendered in headless Chromium: every image loads, no console errors,
every example face captioned (``figcaption.face``) with the class it explains and its clean confidence.

The report has no scripts of its own. The test loads a copy with a small probe
script inserted first: it records window errors (failed resources included)
and console.error/warn calls, and after ``load`` writes the count of images
whose ``naturalWidth`` is 0 into the DOM, which ``--dump-dom`` returns.
Chromium also prints every console message to stderr with
``--enable-logging=stderr``; a report without scripts must print none.
``.ci/run`` installs Chromium from the system packages; the test skips, with
the reason, only where no browser is installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(e.message ||
  ('resource failed: ' + String(e.target && (e.target.src || e.target.href)).slice(0, 60))), true);
for (const level of ['error', 'warn']) {
  const orig = console[level];
  console[level] = (...a) => { window.__errors.push(level + ': ' + a.join(' ')); orig.apply(console, a); };
}
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 40)),
    errors: window.__errors, width: document.documentElement.scrollWidth,
    faces: Array.from(document.querySelectorAll('.faces figure')).map(f =>
      (f.querySelector('figcaption.face') || {}).textContent || null),
    });
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str:
    for name in (os.environ.get("CMS_JAX_CHROMIUM", ""),) + _NAMES:
        path = shutil.which(name) if name else None
        if path:
            return path
    pytest.skip("no Chromium to render report.html (install the 'chromium' system package; .ci/run does)")


def _chromium(browser, tmp, *args):
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, shared_dir):
    out = tmp_path_factory.mktemp("smoke")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, "-m", "experiments.cms", "--smoke", f"--out_dir={out}", "--workers=0"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_smoke_report_records_its_command_and_draws_readable_maps(smoke_report):
    s = json.load(open(smoke_report / "summary.json"))
    assert s["argv"][0].endswith(os.path.join("experiments", "cms.py")) and "--smoke" in s["argv"]
    text = (smoke_report / "report.html").read_text()
    assert "python -m experiments.cms --smoke" in text and "drop in probability" in text
    assets = os.environ.get("CMS_JAX_ASSETS")  # recorded, and set again by the Reproduce line
    assert s["assets"] == assets and (not assets or f"CMS_JAX_ASSETS={assets} python -m experiments.cms" in text)
    assert len(s["model_classes"]) == 2 and "<h1>Canonical Model Saliency: tiny</h1>" in text
    assert "<script" not in text and not re.search(r"""(src|href)=["'](?!data:)""", text)  # self-contained
    cms, png = np.load(smoke_report / "cms.npy"), cv2.imread(str(smoke_report / "cms.png"))
    assert cms.shape == (512, 512) and png.shape == (512, 512, 3)  # the main job's canvas, pixel for pixel
    assert cv2.imread(str(smoke_report / "cms_smooth.png")).shape == (512, 512, 3)


def _probe(browser, tmp, html: str, name: str):
    page = tmp / name
    page.write_text(html.replace("<meta charset='utf-8'>", "<meta charset='utf-8'>" + _PROBE, 1))
    res = _chromium(browser, tmp, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert m, "the probe did not run: " + res.stderr[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")), res


def test_report_loads_in_chromium_with_every_image_and_no_console_error(smoke_report, tmp_path):
    browser = _browser()
    text = (smoke_report / "report.html").read_text()
    n_img = text.count("<img")
    assert n_img >= 3  # the CMS, its smooth rendering, faces and colour bars
    # The probe sees a broken image when there is one (a control, so a silent probe cannot pass).
    bad = "</h1><img alt='control' src='data:image/png;base64,AAAA'>"
    control, _ = _probe(browser, tmp_path, text.replace("</h1>", bad, 1), "control.html")
    assert control["broken"] == ["control"] and control["errors"], control
    probe, res = _probe(browser, tmp_path, text, "probed.html")
    assert probe["images"] == n_img and probe["broken"] == [] and probe["errors"] == [], probe
    assert probe["width"] <= 1600  # no horizontal overflow at a desktop width
    # Every example face, as the browser lays it out, names the class it explains and its clean confidence.
    classes = json.load(open(smoke_report / "summary.json"))["model_classes"]
    assert probe["faces"] and len(probe["faces"]) == text.count("data:image/jpeg;base64,"), probe["faces"]
    pattern = r"explains (%s), clean confidence [01]\.\d{3}" % "|".join(map(re.escape, classes))
    assert all(f and re.search(pattern, f) for f in probe["faces"]), probe["faces"]
    assert not re.findall(r"CONSOLE.*", res.stderr), re.findall(r"CONSOLE.*", res.stderr)
    # The unmodified report, as a user opens it: no console message at all, and a page that is not blank.
    shot = tmp_path / "shot.png"
    res = _chromium(browser, tmp_path, "--window-size=1400,2400", f"--screenshot={shot}",
                    (smoke_report / "report.html").as_uri())
    assert res.returncode == 0 and not re.findall(r"CONSOLE.*", res.stderr), res.stderr[-2000:]
    page = cv2.imread(str(shot))
    assert page.shape[:2] == (2400, 1400)
    assert (page.min(2) < 230).mean() > 0.05  # not a blank page: maps and photos were painted
    assert ((page.max(2).astype(int) - page.min(2)) > 60).mean() > 0.001  # with the maps' colours
