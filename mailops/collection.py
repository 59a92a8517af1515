"""The Ansible collection mailops.mailserver, built from the roles and playbooks mailops runs.

A collection ignores a role's own ``filter_plugins/``: its filters live in the collection's
``plugins/filter/`` and a collection role's templates reach them only by their collection names
(``mailops.mailserver.NAME``; Ansible searches no collection for a short filter name). The roles
in git call them by their short names, which is what a role run from a roles path (mailops
itself, CI, plain ``ansible-playbook`` in this checkout) needs. So :func:`build` stages a copy -
collection/ (galaxy.yml, meta/), roles/, playbooks/, the filter plugins moved to plugins/filter/
and every use of them in the roles renamed - and runs ``ansible-galaxy collection build`` on it.
Nothing is kept twice in git.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from mailops.ansible import project_dir
from mailops.errors import MailopsError

TEXT_SUFFIXES = {".yml", ".yaml", ".j2"}


def collection_source() -> Path:
    """The directory holding galaxy.yml and meta/runtime.yml (collection/ of the checkout or package)."""
    for path in (project_dir() / "collection", project_dir() / "collection_meta"):  # checkout, wheel (setup.py)
        if (path / "galaxy.yml").is_file():
            return path
    raise MailopsError(f"{project_dir()}: no collection/galaxy.yml here; build the collection from a mailops "
                       "checkout or an installed wheel")


def collection_name() -> str:
    meta = yaml.safe_load((collection_source() / "galaxy.yml").read_text())
    return f"{meta['namespace']}.{meta['name']}"


def _filters(plugin: Path) -> list[str]:
    spec = importlib.util.spec_from_file_location(f"_mailops_filter_{plugin.stem}", plugin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.FilterModule().filters())


def stage(dest: Path) -> Path:
    """The collection's tree at ``dest``: what ``ansible-galaxy collection build`` reads."""
    root, fqcn = project_dir(), collection_name()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(collection_source(), dest, ignore=ignore)
    shutil.copytree(root / "roles", dest / "roles", ignore=ignore)
    shutil.copytree(root / "playbooks", dest / "playbooks", ignore=ignore)
    plugins = dest / "plugins" / "filter"
    plugins.mkdir(parents=True)
    names: list[str] = []
    for plugin in sorted((dest / "roles").glob("*/filter_plugins/*.py")):
        if (plugins / plugin.name).exists():
            raise MailopsError(f"{plugin}: a filter plugin file of that name is already in the collection; rename one")
        names += _filters(plugin)
        plugin.rename(plugins / plugin.name)
    for empty in (dest / "roles").glob("*/filter_plugins"):
        shutil.rmtree(empty)
    if names:
        use = re.compile(r"(\|\s*)(" + "|".join(map(re.escape, names)) + r")\b")
        for path in (dest / "roles").rglob("*"):
            if path.is_file() and path.suffix in TEXT_SUFFIXES:
                text = path.read_text()
                new = use.sub(rf"\g<1>{fqcn}.\g<2>", text)
                if new != text:
                    path.write_text(new)
    return dest


def build(output_dir: Path) -> Path:
    """Build the collection tarball into ``output_dir`` with ``ansible-galaxy collection build``;
    returns its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    with tempfile.TemporaryDirectory(prefix="mailops-collection-") as tmp:
        staged = stage(Path(tmp) / "collection")
        proc = subprocess.run([str(galaxy if galaxy.exists() else "ansible-galaxy"), "collection", "build", "--force",
                               "--output-path", str(output_dir.resolve()), str(staged)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MailopsError(f"ansible-galaxy collection build failed: {tail[0]}")
    meta = yaml.safe_load((collection_source() / "galaxy.yml").read_text())
    tarball = output_dir / f"{meta['namespace']}-{meta['name']}-{meta['version']}.tar.gz"
    if not tarball.is_file():
        raise MailopsError(f"ansible-galaxy collection build reported success but wrote no {tarball.name}")
    return tarball
