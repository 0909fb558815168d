"""With AMBIENT_TEST_DATABASE_URL set, each test's databases on that server are dropped after it."""
import pytest

from app_helpers import created_databases, drop_databases


@pytest.fixture(autouse=True)
def _drop_test_databases():
    before = created_databases()      # databases made at import (tests/test_fuzz_api.py) live on
    yield
    drop_databases(before)


def pytest_sessionfinish(session, exitstatus):
    drop_databases()
