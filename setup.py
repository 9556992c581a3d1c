"""keep_samd: a TFX pipeline for multi-scenario, multi-task recommendation (KEEP, SAMD, PEPNet, ADL, GRec).

Dependencies are pinned in requirements.lock and installed with
`pip install --no-deps --ignore-requires-python -r requirements.lock`; this file only
declares the packages, so `pip install -e .` never re-resolves the TFX stack.
"""
from setuptools import find_packages, setup

setup(
    name="keep_samd",
    version="0.1.0",
    description="Heterogeneous multi-scenario, multi-task recommendation on TFX",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines*", "components*", "models*", "trainers*", "serving*", "schemas*", "synthetic*"]),
    package_data={"schemas": ["*.pbtxt"]},
    install_requires=[],
)
