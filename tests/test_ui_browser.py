"""
ui.html in a real browser: headless Chromium (Debian's `chromium` package, not Playwright's own download) driven
by Python Playwright, against real chat_web servers on 127.0.0.1 serving the tiny checkpoints.

Setup (what scripts/setup.sh should do): `apt-get install -y chromium` and `pip install playwright`
(never `playwright install`: its browser download is not reachable here). NANOCHAT_CHROMIUM overrides the path.
Skips, with the reason, only when no Chromium binary or no playwright package is available.

    python -m pytest tests/test_ui_browser.py -q
    NANOCHAT_UI_SCREENSHOT=out/ui.png python -m pytest tests/test_ui_browser.py -q   # also save a screenshot
"""
import os
import shutil
import time

import pytest

from tests.tiny_model import XSS, chat_servers, reply_text, tiny_base_dir

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev dependency)")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "ui-key"


def find_chromium():
    candidates = [os.environ.get("NANOCHAT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser"), shutil.which("google-chrome")]
    return next((c for c in candidates if c and os.path.exists(c)), None)


@pytest.fixture(scope="module")
def servers():
    with chat_servers(tiny_base_dir(), ("--source", "sft", "--workers", "1"),
                      ("--source", "base", "--workers", "1", "--max-queue", "0", "--api-key", KEY)) as both:
        yield both


@pytest.fixture(scope="module")
def browser():
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found: apt-get install -y chromium (or set NANOCHAT_CHROMIUM=/path/to/chrome)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_ui(page, server, temperature="0", max_tokens="100", api_key=""):
    page.goto(server.url + "/")
    page.click("#settings-toggle")
    page.fill("#temperature", temperature)
    page.fill("#max-tokens", max_tokens)
    page.fill("#api-key", api_key)


def send(page, text):
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_idle(page):
    page.wait_for_selector("#send:not([hidden])")
    page.wait_for_selector("#stop[hidden]", state="attached")


def last_reply(page):
    return page.locator(".msg.assistant .content").last


# -----------------------------------------------------------------------------


def test_send_message_and_see_the_reply(page, servers):
    chat, _ = servers
    open_ui(page, chat)
    assert page.title() == "nanochat"
    send(page, "hi")
    wait_idle(page)
    assert page.locator(".msg.user .content").last.text_content() == "hi"
    assert last_reply(page).text_content() == reply_text("hi")  # emoji and all
    assert page.locator("#model-name").text_content() == "nanochat-sft-tiny-step300"
    # a new chat (the tiny model only knows single-turn answers): the tool call and its output are shown as
    # distinct elements
    page.click("#new-chat")
    send(page, "what is 12*3?")
    wait_idle(page)
    assert page.locator(".msg").count() == 2
    assert last_reply(page).locator(".tool").text_content() == "12*3"
    assert last_reply(page).locator(".output").text_content() == "36"
    if os.environ.get("NANOCHAT_UI_SCREENSHOT"):
        send(page, "show code")  # a second turn: whatever the tiny model makes of it
        wait_idle(page)
        os.makedirs(os.path.dirname(os.environ["NANOCHAT_UI_SCREENSHOT"]) or ".", exist_ok=True)
        page.screenshot(path=os.environ["NANOCHAT_UI_SCREENSHOT"])


def test_code_block_edit_and_regenerate(page, servers):
    chat, _ = servers
    open_ui(page, chat)
    send(page, "hi")
    wait_idle(page)
    page.locator(".msg.user .edit").first.click()
    page.fill(".edit-box", "show code")
    page.click(".save")
    wait_idle(page)
    # the edit replaced the turn: one user message, one reply, and the reply is the code answer
    assert page.locator(".msg").count() == 2
    assert page.locator(".msg.user .content").text_content() == "show code"
    assert last_reply(page).locator("pre code").text_content() == "print('hi')\n"
    page.click(".regenerate")
    wait_idle(page)
    assert page.locator(".msg").count() == 2
    # textContent of: text, <pre> (language label + code), text
    assert last_reply(page).text_content() == "Here:\npythonprint('hi')\n\nDone."


def test_xss_payload_stays_text(page, servers):
    chat, _ = servers
    open_ui(page, chat)
    send(page, "show html")  # the tiny model answers with an <img onerror> payload
    wait_idle(page)
    assert last_reply(page).text_content() == XSS
    send(page, XSS)  # and the user's own text is just as inert
    wait_idle(page)
    assert page.locator(".msg.user .content").last.text_content() == XSS
    assert page.locator("#messages img").count() == 0 and page.locator("#messages b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_stream_is_incremental_and_stop_works(page, servers):
    _, babble = servers
    open_ui(page, babble, temperature="1", max_tokens="12000", api_key=KEY)
    # record every distinct length the reply passes through while it streams
    page.evaluate("""() => { window.__lengths = new Set();
        new MutationObserver(() => { const c = document.querySelectorAll('.msg.assistant .content');
            if (c.length) window.__lengths.add(c[c.length - 1].textContent.length); })
        .observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true}); }""")
    send(page, "tell me everything")
    page.wait_for_selector("#stop:not([hidden])")
    # it really streams: the reply is rendered in several partial lengths while the server is still generating
    # (polled from Python: the page's CSP forbids the string eval that page.wait_for_function would need). We
    # look for 3 lengths, not more: under load the browser may render the stream in few large pieces, and
    # waiting for many renders could outlast even a 12000-token generation.
    deadline = time.time() + 30
    while page.evaluate("window.__lengths.size") < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert page.evaluate("window.__lengths.size") >= 3
    assert babble.health()["busy"] == 1, "the reply finished before Stop could be tested"
    page.click("#stop")
    wait_idle(page)
    assert page.locator(".msg.assistant .note").last.text_content() == "stopped"
    stopped_at = last_reply(page).text_content()
    deadline = time.time() + 10
    while babble.health()["busy"] and time.time() < deadline:  # the server's worker is freed too
        time.sleep(0.05)
    health = babble.health()
    assert health["busy"] == 0 and health["cancelled"] >= 1 and health["served"] == 0
    time.sleep(0.3)
    assert last_reply(page).text_content() == stopped_at  # nothing arrives after stop
    assert 0 < len(stopped_at)


def test_banner_when_server_unreachable_and_new_chat(page, servers):
    chat, _ = servers
    open_ui(page, chat)
    assert not page.locator("#banner").is_visible()
    page.route("**/health", lambda route: route.abort())  # the server "goes away" for the health poll
    page.wait_for_selector("#banner.show", timeout=10_000)
    assert "Cannot reach" in page.locator("#banner").text_content()
    page.unroute("**/health")
    page.wait_for_selector("#banner:not(.show)", state="attached", timeout=10_000)
    send(page, "hi")
    wait_idle(page)
    assert page.locator(".msg").count() == 2
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0 and page.locator(".empty").is_visible()
