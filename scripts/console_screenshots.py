"""The console's pages photographed for docs/console/, on the demo's data (what `make console` shows).

    .venv/bin/python -m scripts.console_screenshots [PAGE ...]

Runs the demo with the console open, signs in with Debian's Chromium (headless, through Playwright), saves
each page as docs/console/<page>.png, and stops everything. A page the console does not serve is skipped.
"""

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, ViewportSize, async_playwright

from scripts.demo import DemoError, Processes, exercise, stop

DOCS = Path(__file__).resolve().parents[1] / "docs" / "console"
# Each page's path; its file is docs/console/<name>.png.
PAGES = {
    "sign-in": "/console/sign-in",
    "overview": "/console",
    "deliveries": "/console/deliveries",
    "quarantine": "/console/quarantine",
    "links": "/console/links",
}
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium as root in a container, and none of its calls home (the browser tests launch it alike).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A laptop's width, kept small so the committed pictures stay small.
VIEWPORT: ViewportSize = {"width": 1100, "height": 700}


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(PAGES))
    if unknown:
        print(f"no such page: {', '.join(unknown)} (pages: {', '.join(PAGES)})")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="relay-console-shots-"))
    try:
        asyncio.run(photograph(workdir, names or list(PAGES)))
    except DemoError as error:
        print(f"The demo could not run: {error}")
        return 1
    return 0


async def photograph(workdir: Path, names: list[str]) -> None:
    """The demo's relay with an admin token, then each page named, signed in."""
    admin_token = secrets.token_urlsafe(24)
    processes = Processes()
    try:
        await exercise(workdir, processes, admin_token=admin_token)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            context = await browser.new_context(base_url=processes.relay_url, viewport=VIEWPORT)
            page = await context.new_page()
            if "sign-in" in names:
                await page.goto(PAGES["sign-in"])
                await save(page, "sign-in")
            await page.goto(PAGES["sign-in"])
            await page.get_by_label("Admin token").fill(admin_token)
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("heading", name="Overview", level=1).wait_for()
            for name in names:
                if name != "sign-in":
                    answer = await page.goto(PAGES[name])
                    if answer is None or answer.status != 200:
                        print(f"{name}: {PAGES[name]} answered {answer and answer.status}, skipped")
                        continue
                    await save(page, name)
            await browser.close()
    finally:
        for process in (processes.relay, processes.sim, processes.globex_sim):
            if process is not None:
                await stop(process)


async def save(page: Page, name: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"{name}: {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
