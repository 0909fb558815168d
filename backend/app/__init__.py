"""The annotation web app (FastAPI + Jinja2): people label units in the browser."""
from backend.app.main import create_app

__all__ = ["create_app"]
