"""Fixtures: one governed stack per test session (tests that stop a part restart it)."""
from __future__ import annotations

import pytest

from harness import Stack


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack")).running() as s:
        yield s


@pytest.fixture(scope="session")
def token(stack) -> str:
    return stack.mint()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "stack" in item.fixturenames:
        stack = item.funcargs.get("stack")
        if stack is not None:
            report.sections.append(("behavry logs", f"logs kept in {stack.logs}"))
            for name, service in stack.services.items():
                tail = "\n".join(service.log_text().splitlines()[-40:])
                report.sections.append((f"{name} log (tail)", tail))
