"""bizzyd: the Bizzy application server."""

__version__ = "0.1.0"
