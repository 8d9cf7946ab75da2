"""The import graph of the package runs one way: every import points down a floor, none in a circle.

Every module under ``cms_jax/``, ``experiments/`` and ``converters/`` is parsed
with `ast`; every import counts, the lazy ones inside functions too. The rules
(STYLE.md: "Nothing downstream reaches back up"):

* the job (``cms_jax/pipeline/``) is reached from outside only through its
  public entry ``cms_jax.pipeline`` (``run_job``, ``RunConfig``, ``read_run``),
  never a submodule (tests are exempt: they test the job's internals);
* only the layers above the job import it at all;
* no import runs up from a lower floor to a higher one (`FLOORS`);
* no two modules import each other, directly or around a circle.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TREES = ("cms_jax", "experiments", "converters")

# Floors, bottom first: a module may import its own floor and the ones below it.
FLOORS = (
    # core: the paper's equations and the plumbing beneath them
    ("cms_jax", "cms_jax.api", "cms_jax.assets", "cms_jax.storage", "cms_jax.workers", "cms_jax.sharding",
     "cms_jax.convs", "cms_jax.compile_options", "cms_jax.occlusion", "cms_jax.projection", "cms_jax.work_items",
     "cms_jax.incremental", "cms_jax.forward", "cms_jax.engine", "cms_jax.accumulate", "cms_jax.viz",
     "cms_jax.sources", "cms_jax.metrics", "cms_jax.faithfulness", "cms_jax.roc", "cms_jax.groups", "cms_jax.regions"),
    ("cms_jax.models", "cms_jax.align"),                      # models and Section 3.1's alignment
    ("cms_jax.baselines", "cms_jax.render", "cms_jax.data"),  # explanations to compare, drawing, host data
    ("cms_jax.scoring", "cms_jax.train"),                     # the library layer the job and fine-tuning share
    ("cms_jax.pipeline", "cms_jax.verify"),                   # the main job; the pair audit beside it
    ("cms_jax.figures", "cms_jax.bench", "cms_jax.notebook"),  # above the job: its callers
    ("experiments", "converters"),                            # scripts
)
# The layers above the job, the only ones that may import `cms_jax.pipeline` (its public entry).
ABOVE_JOB = ("cms_jax.figures", "cms_jax.bench", "cms_jax.notebook", "experiments")


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The floor unit of a module: ``cms_jax.<top>`` (a subpackage or a top-level module), or its tree."""
    parts = module.split(".")
    return parts[0] if parts[0] != "cms_jax" else ".".join(parts[:2])


def _inside(module: str, unit: str) -> bool:
    return module == unit or module.startswith(unit + ".")


def imports(path: pathlib.Path, known: set[str], root: pathlib.Path = ROOT) -> list[tuple[str, int]]:
    """The project modules ``path`` imports (with line numbers), module level and inside functions.

    ``from a.b import c`` names ``a.b.c`` where that is a module, else ``a.b``; relative imports
    are resolved against the file's package.
    """
    here = module_name(path, root)
    pkg = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in known else base, node.lineno))
    return [(m, line) for m, line in out if package_of(m) in {package_of(k) for k in known}]


def project_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    return sorted(p for t in TREES for p in (root / t).rglob("*.py"))


def import_graph(root: pathlib.Path = ROOT) -> dict[str, list[tuple[str, int, str]]]:
    """``{module: [(imported module, line, file)]}`` over the project's trees."""
    files = project_files(root)
    known = {module_name(p, root) for p in files}
    graph = {}
    for p in files:
        here = module_name(p, root)
        graph[here] = [(m, line, str(p.relative_to(root))) for m, line in imports(p, known, root)
                       if m in known or any(_inside(m, k) for k in known)]
        graph[here] = [(m if m in known else next(k for k in sorted(known, key=len, reverse=True)
                                                     if _inside(m, k)), line, f) for m, line, f in graph[here]]
    return graph


def floor_of(module: str) -> int:
    unit = package_of(module)
    for i, floor in enumerate(FLOORS):
        if unit in floor:
            return i
    raise AssertionError(f"{module} is on no floor of tests/test_layers.py FLOORS: give it one")


def violations(graph: dict[str, list[tuple[str, int, str]]]) -> list[str]:
    """Every broken rule, one line each, naming the file, the line and the import."""
    bad = []
    for here, edges in graph.items():
        for there, line, f in edges:
            if here == there:
                continue
            where = f"{f}:{line} imports {there}"
            if _inside(there, "cms_jax.pipeline") and there != "cms_jax.pipeline" \
                    and not _inside(here, "cms_jax.pipeline"):
                bad.append(f"{where}: a submodule of the job; use the public entry cms_jax.pipeline")
            if _inside(there, "cms_jax.pipeline") and not _inside(here, "cms_jax.pipeline") \
                    and not any(_inside(here, u) for u in ABOVE_JOB):
                bad.append(f"{where}: only {', '.join(ABOVE_JOB)} may call the job")
            if floor_of(there) > floor_of(here):
                bad.append(f"{where}: runs up from floor {floor_of(here)} ({package_of(here)}) to floor "
                           f"{floor_of(there)} ({package_of(there)})")
    return bad + cycles(graph)


def cycles(graph: dict[str, list[tuple[str, int, str]]]) -> list[str]:
    """Each import circle between modules, once, as 'a -> b -> a' (Tarjan's strongly connected components)."""
    succ = {m: sorted({t for t, _, _ in e if t != m and t in graph}) for m, e in graph.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append("import circle: " + " -> ".join(sorted(comp)) + f" -> {sorted(comp)[0]}")

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return out


def test_no_import_runs_back_up_or_in_a_circle():
    bad = violations(import_graph())
    assert not bad, "the import graph breaks its layers:\n  " + "\n  ".join(bad)


def test_every_module_has_a_floor():
    for module in import_graph():
        floor_of(module)


@pytest.mark.parametrize("where, source, expected", [
    ("cms_jax/figures/bad.py", "from cms_jax.pipeline.writers import save_png\n", "a submodule of the job"),
    ("cms_jax/train/bad.py", "def f():\n    from cms_jax.pipeline import RunConfig\n", "may call the job"),
    ("cms_jax/models/bad.py", "from cms_jax.scoring import scorer\n", "runs up from floor 1"),
    ("cms_jax/occlusion.py", "import cms_jax.engine\n", "import circle"),
])
def test_the_checker_flags_a_planted_violation(tmp_path, where, source, expected):
    """A tree with one bad import added: the checker names its file and the import."""
    for t in TREES:
        for p in (ROOT / t).rglob("*.py"):
            dest = tmp_path / p.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(p.read_text())
    planted = tmp_path / where
    planted.write_text((planted.read_text() if planted.exists() else "") + source)
    bad = violations(import_graph(tmp_path))
    assert any(expected in b and (where in b or "circle" in b) for b in bad), bad
