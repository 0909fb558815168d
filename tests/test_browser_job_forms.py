"""The job forms in Debian's Chromium: datasets and runs are picked from what lies under the data roots (typing
a folder stays possible), an error shows beside its field under the field's label, and the values sent with
one card do not appear in the others."""
from __future__ import annotations

import json

import pytest

from app_helpers import add_user, database_url, running_server
from browser_helpers import chromium_page, log_in, needs_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    """A dataset and a run under the data root (no worker: jobs stay queued)."""
    data, run = tmp_path / "jobs" / "1" / "data", tmp_path / "jobs" / "1" / "run"
    data.mkdir(parents=True)
    (data / "manifest.jsonl").write_text("")
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data_dir": str(data)}))
    url = database_url(tmp_path)
    add_user(url, "boss", is_admin=True)
    with running_server(url, env={"AMBIENT_DATA_ROOTS": str(tmp_path)}) as base:
        yield base, tmp_path, data, run


def options(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} option", "(os) => os.map((o) => o.value)")


def test_folders_are_picked_from_the_data_roots_and_errors_stay_beside_their_field(site):
    base, root, data, run = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        page.goto(f"{base}/admin/jobs")
        assert "/data/jobs/1/data" not in page.content()                 # no placeholder from another install
        train = page.locator("#new-train")
        assert options(page, "#new-train select[name=data_dir]") == [str(data)]
        assert options(page, "#new-units select[name=run_dir]") == [str(run)]
        assert options(page, "#new-units select[name=data_dir]") == ["", str(data)]   # "" : the run's own
        assert str(root) in train.locator("input[name=data_dir_typed]").get_attribute("placeholder")

        missing = root / "nowhere"
        train.locator("input[name=data_dir_typed]").fill(str(missing))  # the typed folder wins over the list
        train.locator("input[name=epochs]").fill("3")
        train.locator("button[type=submit]").click()
        page.wait_for_load_state()
        error = page.locator("#new-train #error-train-data_dir")
        assert error.inner_text() == f"Dataset folder: {missing} does not exist on the server"
        assert "data_dir" not in page.inner_text("#job-error") and "Dataset folder" in page.inner_text("#job-error")
        assert page.locator(".field-error").count() == 1
        assert page.locator("[aria-invalid=true]").count() == 1 and \
            page.get_attribute("#new-train input[name=data_dir_typed]", "aria-invalid") == "true"   # the box it came from
        train = page.locator("#new-train")
        assert train.locator("input[name=data_dir_typed]").input_value() == str(missing)
        assert train.locator("input[name=epochs]").input_value() == "3"
        for card in ("labels", "units", "dissect", "demo"):              # what train sent stays in its card
            assert str(missing) not in page.locator(f"#new-{card}").inner_html()
        assert page.locator("#new-labels input[name=data_dir_typed]").input_value() == ""
        assert page.locator("#new-demo input[name=epochs]").input_value() == ""

        train.locator("input[name=data_dir_typed]").fill("")             # now pick it from the list
        train.locator("button[type=submit]").click()
        page.wait_for_url(f"{base}/admin/jobs/1")
        job = page.request.get(f"{base}/api/jobs/1").json()
        assert job["kind"] == "train" and job["params"]["data_dir"] == str(data) and job["params"]["epochs"] == 3

        page.goto(f"{base}/admin/jobs")                                  # a run picked from the list
        page.locator("#new-dissect select[name=run_dir]").select_option(str(run))
        page.click("#new-dissect button[type=submit]")
        page.wait_for_url(f"{base}/admin/jobs/2")
        assert page.request.get(f"{base}/api/jobs/2").json()["params"]["run_dir"] == str(run)
