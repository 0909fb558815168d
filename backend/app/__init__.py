"""The annotation web app (FastAPI + Jinja2): people label units in the browser."""


def create_app(*args, **kwargs):
    # Imported on use: CLI commands that only touch accounts must not load the app (and torch) to start fast.
    from backend.app.main import create_app as create
    return create(*args, **kwargs)


__all__ = ["create_app"]
