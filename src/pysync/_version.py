"""pysync's version: the one source (pyproject.toml reads it statically). It imports
nothing, so a module that names the version (the ``server`` header, a bench report)
does not load the package's app layer with ``import pysync``."""

__version__ = "0.1.0"
