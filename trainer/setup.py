"""Build hook: ship the contracts (../schema/*.json) inside the installed package.

The repository keeps one copy of the schema, in schema/; an installed trainer
finds its copy at pie_trainer/schema/ (see pie_trainer/core/bundle.py: schema_path).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithSchema(build_py):
    def run(self) -> None:
        super().run()
        src = Path(__file__).resolve().parent.parent / "schema"
        dst = Path(self.build_lib) / "pie_trainer" / "schema"
        if not src.is_dir():
            raise SystemExit(f"cannot find the schema folder {src}: build from the pie repository")
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.json"):
            shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": BuildWithSchema})
