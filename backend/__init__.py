"""Ambient's edges: the CLI, the database, jobs and the web app."""
import model  # noqa: F401: forces weights-only loading of model files in every process (model/__init__.py)
