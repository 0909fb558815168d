"""API documentation that works offline: a page rendered from the app's own OpenAPI schema."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from backend.app.deps import optional_user, render
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def api_docs(request: Request, user: Annotator | None = Depends(optional_user)):
    schema = request.app.openapi()
    operations = [{"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                   "description": op.get("description", ""),
                   "parameters": [p["name"] for p in op.get("parameters", [])],
                   "responses": sorted(op.get("responses", {}))}
                  for path, methods in schema["paths"].items() for method, op in methods.items()]
    return render(request, "docs.html", user=user, schema=schema, operations=operations)
