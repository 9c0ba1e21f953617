"""The console in a real headless Chromium (Debian's, at $SLUICE_CHROMIUM), driven by Playwright.

Run by dataplane/tests/console_browser.rs against a gateway serving the quickstart (plus a key
that reads usage and manages keys):

    browser.py BASE_URL DEMO_KEY ADMIN_KEY SCREENSHOT_DIR

Walks what a user does and checks what they see: a wrong key's message; sign-in; models and
prices; a streamed playground answer with its TTFT and backend; the usage chart growing after
requests; a backend turning ejected after the simulator is told to fail; a key created (its
plaintext shown once, and working) and revoked. Writes a screenshot of each step into
SCREENSHOT_DIR (1280x800, and one at a phone's 390x844). Exits non-zero on the first failed check.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, DEMO_KEY, ADMIN_KEY, SHOTS = sys.argv[1:5]
CONSOLE = f"{BASE}/demo/console/"
CHAT_BACKEND = "demo/simulated-chat/sim-chat-8b"


def step(name):
    print(f"step: {name}", flush=True)


def http(method, path, key, body=None, headers=None):
    """A plain HTTP call beside the browser (the simulator's fault header, key checks)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{BASE}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def chat(fault=None):
    return http("POST", "/demo/assistant/v1/chat/completions", DEMO_KEY,
                {"model": "demo-chat", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                {"x-sim-fault": fault} if fault else None)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))


def sign_in(page, key):
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")


def unlabelled(page):
    """Form controls without an accessible name (a label, aria-label or aria-labelledby)."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => el.offsetParent !== null)
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
            && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
        .map((el) => el.outerHTML.slice(0, 80))""")


def main():
    executable = os.environ["SLUICE_CHROMIUM"]
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme="light")
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("dialog", lambda dialog: dialog.accept())
        expect.set_options(timeout=15_000)

        step("a wrong key gets a clear message")
        page.goto(CONSOLE)
        sign_in(page, "sl_demo_wrongkey")
        expect(page.locator("#signin-error")).to_contain_text("not accepted")
        assert not unlabelled(page), unlabelled(page)
        shot(page, "signin-wrong-key")
        errors.clear()  # the 401 the browser logs is the point of this step

        step("sign in and see models and prices")
        sign_in(page, DEMO_KEY)
        expect(page.locator("#whoami")).to_contain_text("demo/demo")
        row = page.locator('table.models tr[data-model="demo-chat"]')
        expect(row).to_contain_text("demo-chat-latest")
        expect(row).to_contain_text("32,768")
        expect(row.locator(".price")).to_contain_text("$0.10 in")
        expect(row.locator(".price")).to_contain_text("$0.40 out")
        expect(page.locator("code.base-url").first).to_have_text(f"{BASE}/demo/assistant/v1")
        page.locator("details summary").first.click()
        expect(page.locator("pre").first).to_contain_text(f"curl {BASE}/demo/assistant/v1/chat/completions")
        shot(page, "models")

        step("the keyboard moves between tabs")
        page.focus("#tab-models")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#tab-usage")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#tab-usage")).to_be_focused()

        step("usage before")
        expect(page.locator("#usage-total")).to_be_visible()
        before = int(page.locator("figure").first.get_attribute("data-total"))

        step("a streamed playground request shows its TTFT and backend")
        page.click("#tab-playground")
        page.select_option("#play-model", label="demo-chat (assistant)")
        page.fill("#play-ttft", "2000")
        page.fill("#play-prompt", "Say hello to the console.")
        page.click("#play-send")
        expect(page.locator("#play-backend")).to_have_text(CHAT_BACKEND)
        expect(page.locator("#play-ttft-value")).to_contain_text("ms")
        assert page.locator("#play-answer").inner_text().strip(), "the answer arrived"
        ttft = int(page.locator("#play-ttft-value").inner_text().split()[0])
        assert 0 < ttft < 10_000, ttft
        expect(page.locator("#play-stats")).to_contain_text("Requests left")
        shot(page, "playground")

        step("the usage chart changes after requests")
        for _ in range(3):
            assert chat() == 200
        page.click("#tab-usage")
        expect(page.locator("figure").first).to_have_attribute("data-total", str(before + 4))
        shot(page, "usage")

        step("a backend turns unhealthy after the simulator is told to fail")
        page.click("#tab-health")
        chat_row = page.locator(f'table.health tr[data-backend="{CHAT_BACKEND}"]')
        expect(chat_row.locator(".badge")).to_have_text("healthy")
        for _ in range(6):
            assert chat("500") >= 500
        page.click("#health-refresh")
        expect(chat_row.locator(".badge")).to_have_text("ejected")
        shot(page, "health")

        step("a management key creates and revokes a key")
        page.click("#signout")
        sign_in(page, ADMIN_KEY)
        expect(page.locator("#tab-keys")).to_be_visible()
        page.click("#tab-keys")
        page.fill("#new-key-name", "console-made")
        page.fill("#new-key-description", "Made in the browser test")
        page.click("#key-create button[type=submit]")
        secret = page.locator("#new-key-secret")
        expect(secret).to_contain_text("sl_demo_")
        plaintext = secret.inner_text().strip()
        expect(page.locator('table.keys tr[data-key="console-made"]')).to_be_visible()
        shot(page, "keys")
        deadline = time.time() + 10
        while http("GET", "/demo/v1/keys/self", plaintext) != 200:
            assert time.time() < deadline, "the new key works within 10 s"
            time.sleep(0.2)
        page.click('table.keys tr[data-key="console-made"] button.danger')
        expect(page.locator("#key-revoked")).to_contain_text("console-made")
        expect(page.locator('table.keys tr[data-key="console-made"]')).to_have_count(0)
        deadline = time.time() + 10
        while http("GET", "/demo/v1/keys/self", plaintext) != 401:
            assert time.time() < deadline, "the revoked key stops working within 10 s"
            time.sleep(0.2)

        step("a phone-sized screen")
        page.set_viewport_size({"width": 390, "height": 844})
        page.click("#tab-models")
        page.evaluate("window.scrollTo(0, 0)")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling"
        shot(page, "phone-models")

        assert not errors, errors
        browser.close()
    print("browser: all checks passed", flush=True)


if __name__ == "__main__":
    main()
