"""Every command written in RESULTS.md, README.md and WORKSPACE.md parses against its script's flags.

A reader reproduces a row by pasting its command; a flag that does not exist (RESULTS.md once
had ``--test_images``) fails only after minutes of imports, or never if it is a typo of a bool.
The flags are read from the scripts' source (``flags.DEFINE_*`` calls, absl's own flags added), so
this test runs in a second and imports no experiment module (their flags would clash in-process).
"""
import ast
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("RESULTS.md", "README.md", "WORKSPACE.md")
ABSL = {"verbosity", "v", "logtostderr", "alsologtostderr", "log_dir", "helpfull", "help", "helpshort",
        "only_check_args", "pdb", "pdb_post_mortem", "run_with_profiling", "profile_file", "use_cprofile_for_profiling",
        "stderrthreshold", "showprefixforinfo", "flagfile", "undefok"}


def script_flags(path: pathlib.Path) -> dict[str, dict]:
    """``{name: {"kind": DEFINE_x, "enum": values or None}}`` of the flags a script defines."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("DEFINE_") and node.args
                and isinstance(node.args[0], ast.Constant)):
            continue
        enum = None
        if node.func.attr == "DEFINE_enum" and len(node.args) > 2:
            try:
                enum = list(ast.literal_eval(node.args[2]))
            except ValueError:
                enum = None  # built from a module's constant: not checked here
        out[node.args[0].value] = {"kind": node.func.attr, "enum": enum}
    return out


def commands(doc: pathlib.Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, args)`` of every ``python -m experiments.X ...`` in ``doc`` (``\\`` continued)."""
    lines = doc.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        line, start = lines[i], i + 1
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        for m in re.finditer(r"python -m (experiments\.\w+)([^`|;&#]*)", line):
            try:
                args = shlex.split(m.group(2))
            except ValueError:
                args = m.group(2).split()
            found.append((start, m.group(1), args))
    return found


CASES = [(doc, *c) for doc in DOCS for c in commands(ROOT / doc)]


def test_the_docs_hold_commands():
    per_doc = {d: sum(1 for c in CASES if c[0] == d) for d in DOCS}
    assert per_doc["RESULTS.md"] >= 15 and per_doc["README.md"] >= 5, per_doc


@pytest.mark.parametrize("doc,line,module,args", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_documented_command_uses_flags_its_script_defines(doc, line, module, args):
    script = ROOT / (module.replace(".", "/") + ".py")
    assert script.exists(), f"{doc}:{line}: {module} names no script"
    defined = script_flags(script)
    for a in args:
        if not a.startswith("--"):
            continue  # a value continued from the flag before, or prose after the command
        name, _, value = a[2:].partition("=")
        if name in ABSL:
            continue
        bare = name[2:] if name.startswith("no") and name[2:] in defined else name
        assert bare in defined, (f"{doc}:{line}: {module} has no flag --{name} (it defines "
                                 f"{', '.join(sorted(defined))})")
        spec = defined[bare]
        if bare != name or (spec["kind"] == "DEFINE_bool" and not value):
            assert spec["kind"] == "DEFINE_bool", f"{doc}:{line}: --{name} is not a bool flag of {module}"
        if spec["enum"] and value:
            assert value in spec["enum"], f"{doc}:{line}: --{name}={value} is not one of {spec['enum']}"
