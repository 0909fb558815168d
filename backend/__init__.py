"""Ambient's edges: the CLI, the database, jobs and the web app."""
