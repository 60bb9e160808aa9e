"""Headless Chromium for the browser tests: Debian's `chromium` driven by PyPI
`playwright` (no `playwright install`), as the recipes say."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched browser, closed afterwards. Start it after any fixture that uses
    asyncio.run: playwright's sync API keeps an event loop running in this thread."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True,
                                    timeout=30000)
        try:
            yield browser
        finally:
            browser.close()
