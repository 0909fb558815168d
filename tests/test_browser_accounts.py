"""The users and profile pages in Debian's Chromium (issue 25): a weak password is refused with the reason
beside the form; an admin-scope token is made with the admin's password and shows when it expires."""
from __future__ import annotations

import pytest

from app_helpers import PASSWORD, add_user, running_server, seed_run
from browser_helpers import chromium_page, log_in, needs_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=2)
    add_user(url, "boss", is_admin=True)
    with running_server(url) as base:
        yield base


def test_an_admin_sees_why_a_password_is_weak_and_makes_an_expiring_admin_token(site):
    with chromium_page() as page:
        log_in(page, site, "boss")
        page.goto(f"{site}/admin/users")
        form = page.locator("#add-user")
        form.locator("input[name=name]").fill("quortlebix")
        form.locator("input[name=password]").fill("quortlebix77")
        form.locator("input[name=your_password]").fill(PASSWORD)      # every account change asks for it
        form.locator("button[type=submit]").click()
        page.wait_for_load_state()
        assert "too easy to guess" in page.locator("#add-error").inner_text()
        assert page.locator("#add-user input[name=name]").input_value() == "quortlebix"    # kept for the retry

        page.goto(f"{site}/profile")
        token_form = page.locator("#token-form")
        token_form.locator("input[name=name]").fill("notebook")
        token_form.locator("select[name=scope]").select_option("admin")
        token_form.locator("input[name=days]").fill("7")
        token_form.locator("input[name=your_password]").fill(PASSWORD)
        token_form.locator("button[type=submit]").click()
        page.wait_for_load_state()
        assert page.locator("#token-value").inner_text().startswith("amb_")
        assert page.locator("#tokens .expires").count() == 1
