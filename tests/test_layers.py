"""The package's layers hold: the library under the CLI does not know click or rich, and
only the lab (and the CLI's `mailops lab` / `mailops demo` commands over it) knows the lab.

- Every module of ``mailops`` outside ``mailops/cli/`` is imported in a fresh interpreter
  in which importing click or rich fails; each attempt is traced to the module that made it.
  A mailops module importing them, directly or inside a function run at import, fails the
  test.  (Third-party packages may try: httpx, under the Cloudflare SDK, imports click and
  rich for its own command line only if they are there - that is theirs, not a mailops layer.)
- Every module outside ``mailops/lab/`` and ``mailops/cli/`` is read as source (AST) and must
  not import ``mailops.lab``, however it is spelled: ``import mailops.lab.x``,
  ``from mailops.lab import x``, ``from mailops import lab``, a relative ``from ..lab import x``,
  or ``importlib.import_module("mailops.lab...")``, also inside functions.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.helpers import ROOT

PACKAGE = ROOT / "mailops"
FORBIDDEN_IN_LIBRARY = ("click", "rich")


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(*excluded_dirs: str) -> dict[str, object]:
    """{dotted name: path} of the package's modules, without those under the excluded directories."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(rel.startswith(d + "/") for d in excluded_dirs):
            continue
        found[_module_name(path)] = path
    return found


# Run in the fresh interpreter: block click and rich, record who asked for them, import each module.
_PROBE = r"""
import importlib, json, sys, traceback

FORBIDDEN = set(sys.argv[1].split(","))
attempts = []

def importer():
    # the innermost frame that is not the import machinery nor this probe
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")) and name != "__main__":
            return name
        frame = frame.f_back
    return "?"

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            attempts.append({"module": name, "by": importer()})
            raise ImportError(f"{name} is blocked: no mailops module outside mailops/cli may import it")
        return None

sys.meta_path.insert(0, Block())
failed = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except BaseException:
        failed[module] = traceback.format_exc(limit=-3)
print(json.dumps({"attempts": attempts, "failed": failed,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)}))
"""


def _probe(modules: list[str], cwd=ROOT) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, ",".join(FORBIDDEN_IN_LIBRARY), *modules],
                          capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_probe_names_the_module_that_imports_click_or_rich(tmp_path):
    (tmp_path / "layered").mkdir()
    (tmp_path / "layered" / "__init__.py").write_text("")
    (tmp_path / "layered" / "renders.py").write_text("def f():\n    pass\n\nfrom rich.console import Console\n")
    (tmp_path / "layered" / "uses_httpx.py").write_text("import httpx\n")
    report = _probe(["layered.renders", "layered.uses_httpx"], cwd=tmp_path)
    by = {(a["by"], a["module"].split(".")[0]) for a in report["attempts"]}
    assert ("layered.renders", "rich") in by and all(b.split(".")[0] in ("layered", "httpx") for b, _ in by), by
    assert list(report["failed"]) == ["layered.renders"]  # httpx does without them; the module cannot
    assert report["loaded"] == []


def test_library_imports_neither_click_nor_rich():
    modules = sorted(_modules("cli"))
    assert "mailops.dns.providers.cloudflare" in modules and "mailops.lab.core" in modules  # the walk finds them
    report = _probe(modules)
    by_mailops = [a for a in report["attempts"] if a["by"].split(".")[0] == "mailops"]
    assert by_mailops == [], f"mailops modules outside mailops/cli import click or rich: {by_mailops}"
    assert report["failed"] == {}, "modules that do not import without click and rich:\n" + "\n".join(
        f"{name}:\n{tb}" for name, tb in report["failed"].items())
    assert report["loaded"] == [], report["loaded"]


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an AST imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append((node.lineno, origin))
            # `from mailops import lab` imports the module mailops.lab
            found += [(node.lineno, f"{origin}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) in
                   ("import_module", "__import__"))):
            found.append((node.lineno, node.args[0].value))
    return found


def _imports_lab(name: str) -> bool:
    return name == "mailops.lab" or name.startswith("mailops.lab.")


def test_imports_of_the_lab_are_recognised_in_every_spelling():
    source = ("import mailops.lab.core\nfrom mailops.lab import core\nfrom mailops import lab\n"
              "from ..lab import dns\nfrom .. import lab\ndef f():\n    import importlib\n"
              "    importlib.import_module('mailops.lab.receiver')\n"
              "from mailops.labels import x\nfrom . import lab_like\nimport mailops.verify\n")
    found = [n for n in _imported_modules(ast.parse(source), "mailops.verify.runner", False) if _imports_lab(n[1])]
    assert sorted({line for line, _ in found}) == [1, 2, 3, 4, 5, 8], found


def test_no_module_outside_the_lab_and_the_cli_imports_the_lab():
    offenders = {}
    for module, path in _modules("lab", "cli").items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, name in _imported_modules(tree, module, path.name == "__init__.py"):
            if _imports_lab(name):
                offenders.setdefault(f"{path.relative_to(ROOT)}:{line}", f"imports {name}")
    offenders = [f"{where}: {what}" for where, what in offenders.items()]
    assert offenders == [], "the lab is imported outside mailops/lab/ and mailops/cli/:\n" + "\n".join(offenders)
