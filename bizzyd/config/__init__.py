"""The configuration: its model (`schema`: directives, contexts, validation), value
types (`types`), the core's directives (`core`), the YAML reader (`loader`) and
`load`, which reads a file, imports the modules it names and validates the whole.

This package's top level holds only the vocabulary a module needs to declare its
directives, so that the module API (`bizzyd.module`) can use it without importing
the loader (which imports the modules).
"""

from __future__ import annotations

from .schema import ConfigError, Directive

__all__ = ["ConfigError", "Directive"]
