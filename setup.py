"""Package layout that pyproject.toml alone cannot express.

The journal's SQL lives in the repository's top-level ``state/`` (the project's layout promise)
but ships inside the package as ``flowmasond.state``: ``package_dir`` maps that one package onto
the top-level directory while every Python package is still discovered automatically, so a new
subpackage can never be left out of the wheel. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["flowmasond", "flowmasond.*", "flowmason_client",
                                      "flowmason_client.*"]), "flowmasond.state"],
    package_dir={"flowmasond.state": "state"},
    package_data={"flowmasond": ["py.typed"],
                  "flowmason_client": ["py.typed", "ui/templates/*.html", "ui/static/*"],
                  "flowmasond.state": ["README.md", "migrations/*.sql", "queries/*.sql",
                                       "postgresql/migrations/*.sql", "postgresql/queries/*.sql"]},
)
