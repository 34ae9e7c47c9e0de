"""Exists only because setuptools takes cffi_modules from setup() (pyproject.toml has the rest)."""

from setuptools import setup

setup(cffi_modules=["fasterlog/_build.py:ffibuilder"])
