"""Notebook and command-line plumbing: run reports, figures, the steering widget, the papermill
runner and the CLI. May import the core and ``steerlab.study``."""
