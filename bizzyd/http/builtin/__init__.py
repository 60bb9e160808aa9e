"""Modules compiled into bizzyd (like nginx's built-in HTTP modules).

They are loaded before the modules the config lists, always, and use only the
module API.  Each entry is an import path of a module with a `module` attribute.
"""

BUILTIN_MODULES: tuple[str, ...] = (
    "bizzyd.http.builtin.rewrite",
    "bizzyd.http.builtin.access",
    "bizzyd.http.builtin.static",
    "bizzyd.http.builtin.headers",
    "bizzyd.http.builtin.errors",
    "bizzyd.http.builtin.limit_req",
    "bizzyd.http.builtin.access_log",
)
