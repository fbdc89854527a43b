"""Screenshots of the pages under tests/screenshots/ (gitignored)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under tests/screenshots/ (gitignored) and return its path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
