"""lmclaims: published claims about language-model internals as re-runnable hypothesis tests."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmclaims")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
