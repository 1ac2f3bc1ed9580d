"""The journal's SQL (schema migrations and named queries), shipped as ``flowmasond.state``.

Data, not code: this file only makes the directory a package so that
``importlib.resources.files("flowmasond.state")`` finds it in a checkout, an editable install
and a wheel alike (setup.py maps the package name onto this top-level directory).
"""
