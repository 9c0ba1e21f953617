"""Screenshots of a self-contained HTML page's sections in a real headless Chromium (Debian's, at
$SLUICE_CHROMIUM), driven by Playwright. Run by dataplane/tests/dashboard_preview:

    screenshot.py PAGE.html SCREENSHOT_DIR

Each <section data-shot="NAME"> becomes SCREENSHOT_DIR/NAME.png. Fails when the page asks the
network for anything (it must need nothing but itself), logs an error, or has no section.
"""

import os
import pathlib
import sys

from playwright.sync_api import sync_playwright

PAGE, SHOTS = sys.argv[1:3]


def main():
    url = pathlib.Path(PAGE).resolve().as_uri()
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ["SLUICE_CHROMIUM"],
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1240, "height": 800}, color_scheme="dark")
        page.on("request", lambda request: request.url != url and problems.append(f"fetched {request.url}"))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.goto(url)
        sections = page.query_selector_all("section[data-shot]")
        if not sections:
            problems.append("no section[data-shot] on the page")
        for section in sections:
            name = section.get_attribute("data-shot")
            section.screenshot(path=os.path.join(SHOTS, f"{name}.png"))
            print(f"screenshot: {name}.png", flush=True)
        browser.close()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)


main()
