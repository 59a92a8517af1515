"""mailops.returnpath runs on the mail hosts, which have Debian's python3 and nothing else:
every import in the package, and in the mailops modules it uses, is the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "mailops" / "returnpath"
# the mailops modules the package may use; each is held to the same rule
ALLOWED_FIRST_PARTY = {"mailops.errors", "mailops.ops.postfixlines"}


def imports_of(source: str, module: str) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved)."""
    found = set()
    package = module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            else:
                found.add(node.module)
    return found


def non_stdlib(names: set[str]) -> set[str]:
    """The names that are neither the standard library nor allowed mailops modules."""
    bad = set()
    for name in names:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        if name in ALLOWED_FIRST_PARTY or name == "mailops.returnpath" or name.startswith("mailops.returnpath."):
            continue
        bad.add(name)
    return bad


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_checker_catches_third_party_and_other_mailops_imports():
    assert non_stdlib(imports_of("import yaml\nfrom click import echo\nimport json\n", "mailops.returnpath.x")) == \
        {"yaml", "click"}
    assert non_stdlib(imports_of("from mailops.inventory import load\nfrom . import mime\n",
                                 "mailops.returnpath.x")) == {"mailops.inventory"}


def test_returnpath_imports_only_the_standard_library():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 8
    problems = {}
    for path in files:
        bad = non_stdlib(imports_of(path.read_text(), module_name(path)))
        if bad:
            problems[str(path.relative_to(ROOT))] = sorted(bad)
    assert problems == {}


def test_the_allowed_mailops_modules_are_standard_library_only_too():
    for name in sorted(ALLOWED_FIRST_PARTY):
        path = ROOT / Path(*name.split(".")).with_suffix(".py")
        imported = imports_of(path.read_text(), name)
        assert non_stdlib(imported) == set(), name
        assert not {i for i in imported if i.startswith("mailops")} - ALLOWED_FIRST_PARTY, name


def test_the_package_imports_with_third_party_packages_hidden(tmp_path):
    # what the server has: the interpreter's own library and the mailops files, no site-packages
    shadow = tmp_path / "mailops"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "errors.py").write_text((ROOT / "mailops" / "errors.py").read_text())
    (shadow / "ops").mkdir()
    (shadow / "ops" / "__init__.py").write_text("")
    (shadow / "ops" / "postfixlines.py").write_text((ROOT / "mailops" / "ops" / "postfixlines.py").read_text())
    (shadow / "returnpath").mkdir()
    for path in PACKAGE.glob("*.py"):
        (shadow / "returnpath" / path.name).write_text(path.read_text())
    code = ("import importlib.util, sys\n"
            "assert importlib.util.find_spec('yaml') is None, 'site-packages still visible'\n"
            "import mailops.returnpath, mailops.returnpath.store, mailops.returnpath.suppression\n"
            "assert mailops.returnpath.__file__.startswith(sys.argv[1])\n"
            "print(mailops.returnpath.classify(b'Subject: x\\n\\nhi\\n').kind)")
    # -S: no site module, so no site-packages (the venv's third-party packages) on the path
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "forward"
