"""Packaging glue that pyproject.toml cannot express; everything else is declared there.

The top-level ``conf/`` tree (qsweep's Hydra configs) is installed inside the
package as ``harness.conf``, so ``qsweep`` finds it with ``pkg://harness.conf``
after a plain, non-editable ``pip install .`` (a source checkout uses ``conf/``
directly). setuptools' ``packages.find`` in pyproject.toml cannot map a folder
to a sub-package name, hence this file.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["quantizer", "quantizer.*", "harness", "harness.*"]) + ["harness.conf"],
    package_dir={"harness.conf": "conf"},
)
