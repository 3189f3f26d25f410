"""Real-browser fixtures: one JupyterLab server on a free loopback port and one Debian Chromium
(driven by Playwright) per session; a fresh browser context per test.

These tests never skip: without Chromium they fail and say how to install it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab_helpers import Lab, launch_chromium, start_lab


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    with start_lab() as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            b = launch_chromium(p)
        except FileNotFoundError as e:
            pytest.fail(str(e), pytrace=False)
        yield b
        b.close()


@dataclass
class Console:
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any, lab: Lab) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    console = Console()
    pg.on("console", lambda m: console.messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: console.errors.append(f"{e}\n{e.stack}"))
    pg.console = console  # type: ignore[attr-defined]
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    lab.shutdown_kernels()
