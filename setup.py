"""The wheel carries the Ansible content: roles/, playbooks/ and ansible.cfg (and the example
inventory, for `mailops init`) are copied into mailops/ at build time, so git keeps one copy (the checkout's) and an installed mailops finds
them next to its code (mailops.ansible.project_dir). roles/returnpath finds the package's own
files as {{ role_path }}/../../mailops, which holds in both layouts."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# source in the checkout -> place inside the installed package
CONTENT = {"roles": "roles", "playbooks": "playbooks", "ansible.cfg": "ansible.cfg",
           "inventories/example": "example_inventory",  # what `mailops init` starts from
           "collection": "collection_meta"}  # galaxy.yml and meta/ of `mailops collection build`


class BuildPyWithAnsible(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the checkout, which has them already
        dest = Path(self.build_lib) / "mailops"
        for name, place in CONTENT.items():
            src, target = HERE / name, dest / place
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, target)


setup(cmdclass={"build_py": BuildPyWithAnsible})
