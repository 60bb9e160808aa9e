"""The compiled build of bizzyd's HTTP fast path (bizzyd/http/build.py says which
build runs).  Everything else about the package is in pyproject.toml.

Optional: where Cython or a C compiler is missing, the package installs without it
and runs the same code as plain Python.  In a checkout, `make` builds it in place
(`python setup.py build_ext --inplace`), again whenever a source is newer.
"""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # plain Python
    extensions = []
else:
    extensions = cythonize(
        [Extension("bizzyd.http.fastpath", ["bizzyd/http/fastpath.py"], optional=True)],
        language_level=3, quiet=True,
        compiler_directives={"infer_types": True},
    )

setup(ext_modules=extensions)
