"""The `ticktape` command line: one thin entry point over recorder, replayer and analysis."""

__version__ = "0.1.0"
