"""The pipeline's layout: model/'s imports (module-level and inside functions) form no circle and never reach
backend/; the web app starts without torch, scipy or what only some routes need."""
import ast
import subprocess
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parent.parent / "model"


def module_name(path: Path) -> str:
    parts = path.relative_to(MODEL.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in its code: ``from a.b import c`` names a.b.c when that is a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def model_import_graph() -> dict[str, set[str]]:
    """module -> the model modules it imports; importing a module also runs the __init__ of each package above
    it, except the packages the importer sits in (they are already being imported)."""
    modules = {module_name(path): path for path in MODEL.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            if imported not in modules:
                continue
            parts = imported.split(".")
            for depth in range(2, len(parts) + 1):
                package = ".".join(parts[:depth])
                if package in modules and not (name + ".").startswith(package + "."):
                    targets.add(package)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as [a, b, ..., a], or None."""
    state = {}                               # absent: unvisited; 1: on the current path; 2: done

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_model_imports_form_no_circle():
    graph = model_import_graph()
    assert "model.sound.labels" in graph and "model.data.frames" in graph      # the walk sees the subpackages
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_sees_a_circle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("def f():\n    from model.network.texton import texton_labels\n")
    assert any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))


def test_model_never_imports_backend_even_inside_functions():
    offenders = [f"{module_name(path)}: {name}" for path in MODEL.rglob("*.py") for name in imported_names(path)
                 if name == "backend" or name.startswith("backend.")]
    assert offenders == []


# Loaded by the routes that need them, never at the app's start: torch and scipy take seconds on 2 cores,
# the others a tenth of a second or less each (PyAV for cochleagrams, plotly's subplots and the data frames
# library under them for figures, zxcvbn for new passwords, Alembic for migrating, numpy for statistics,
# textures and run files, Pillow for images).
LAZY_FOR_THE_APP = ("torch", "scipy", "av", "plotly.subplots", "narwhals", "zxcvbn", "alembic", "numpy", "PIL")


def test_the_web_app_starts_without_the_imports_only_some_routes_need(tmp_path):
    """Importing the app, opening an existing database and answering /login load none of LAZY_FOR_THE_APP;
    Listen loads torch on first use."""
    from backend.db.session import upgrade_db

    url = f"sqlite:///{tmp_path / 'ambient.db'}"
    upgrade_db(url).dispose()
    code = ("import sys, backend.app.main\n"
            f"print(sorted(name for name in {LAZY_FOR_THE_APP!r} if name in sys.modules))\n"
            "from fastapi.testclient import TestClient\n"
            "from backend.config import Settings\n"
            f"with TestClient(backend.app.main.create_app(Settings(database_url={url!r}))) as client:\n"
            "    assert client.get('/login').status_code == 200\n"
            f"print(sorted(name for name in {LAZY_FOR_THE_APP!r} if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]


def test_a_run_folder_is_read_without_torch(tmp_path):
    """RunFolder hands out run.json, the analysed layers, units meta and dissection; torch only for the network."""
    import json

    import numpy as np

    (tmp_path / "run.json").write_text(json.dumps({"data_dir": "/data", "label_kind": "cluster"}))
    (tmp_path / "dissection.json").write_text(json.dumps([{"unit": 0, "category": "dog", "layer": "conv5"}]))
    np.savez(tmp_path / "units_conv5.npz", meta=json.dumps({"layer": "conv5"}))
    code = ("import sys\nfrom model.network.run import RunFolder\n"
            f"run = RunFolder({str(tmp_path)!r})\n"
            "print(run.data_dir, run.layers, run.units_meta('conv5'), run.dissection[0]['category'], "
            "run.labels_file('cluster'), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["/data", "['conv5']", "{'layer':", "'conv5'}", "dog", "/data/labels/cluster.npz",
                                     "False"]
