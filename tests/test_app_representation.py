

def _probe_document(k_values=(2, 30)) -> dict:
    networks = [{"name": "sound (cluster)", "run_dir": None, "label_kind": "cluster", "k": k, "trained": True,
                 "results": {"objects": {"pool5": {"score": 0.4 + k / 100, "per_class": {"dog": 0.5, "<b>cow</b>": None}}}}}
                for k in k_values]
    networks.append({"name": "untrained", "run_dir": None, "label_kind": "cluster", "k": 30, "trained": False,
                     "results": {"objects": {"pool5": {"score": 0.25, "per_class": {"dog": 0.3, "<b>cow</b>": 0.1}}}}})
    return {"dataset": "world", "format": "world", "layers": ["pool5"], "created": "2026-12-01T10:00:00+00:00",
            "tasks": [{"task": "objects", "metric": "mAP", "classes": ["dog", "<b>cow</b>"], "chance": 0.12}],
            "networks": networks}


def test_app_shows_a_runs_representation_and_exports_it(tmp_path):
    from fastapi.testclient import TestClient

    from app_helpers import add_user, login, seed_run
    from backend.app import create_app
    from backend.config import Settings
    from model.network.run import write_probe

    url = seed_run(tmp_path)                       # its run's folder is tmp_path / "run-a"
    (tmp_path / "run-a").mkdir()
    add_user(url, "boss", is_admin=True)
    add_user(url, "ann")
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        page = client.get("/results/1/representation")
        assert page.status_code == 200 and "No probe results yet" in page.text
        write_probe(tmp_path / "run-a", _probe_document())
        page = client.get("/results/1/representation").text
        assert "sound (cluster) (k=2)" in page and "<td>42.0</td>" in page and "<td>70.0</td>" in page
        assert "<td>25.0</td>" in page and "Chance: objects 12.0%" in page
        assert "&lt;b&gt;cow&lt;/b&gt;" in page and "<b>cow</b>" not in page      # escaped
        assert "Fig. A1a" in page and "plotly-figure" in page
        exported = client.get("/api/runs/1/representation.json").json()
        assert exported["probes"][0]["networks"][1]["k"] == 30
        assert client.get("/results/99/representation").status_code == 404
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "ann")
        assert client.get("/api/runs/1/representation.json").status_code == 403
