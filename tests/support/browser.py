"""Helpers of the tests that look at pages in a real browser (Playwright driving Chromium): how
the project measures text size and contrast, and a static file server for built sites."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# WCAG 2 contrast of each element's own text against the first opaque background behind it.
TEXT_METRICS_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
    if (!own) continue;
    const style = getComputedStyle(el);
    const rect = el.getBoundingClientRect();
    const hidden = style.display === 'none' || style.opacity === '0' || rect.width === 0 || rect.height === 0
      || el.closest('[style*="display:none"]') || rect.right < 0 || rect.left < -1000;
    if (hidden) continue;
    const fg = lum(parse(style.color).slice(0, 3)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    out.push({text: own.slice(0, 60), size: parseFloat(style.fontSize), contrast: ratio});
  }
  return out;
}
"""


def readability_problems(page, width: int) -> list[str]:
    """What keeps a page from being read at this width: sideways scrolling, text under 16 px,
    contrast under 4.5:1 (WCAG AA). Empty when the page passes."""
    problems = []
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        problems.append(f"scrolls sideways: {scroll_width} px wide at {width} px")
    metrics = page.evaluate(TEXT_METRICS_JS)
    if not metrics:
        problems.append("no text measured")
    problems += [f"{m['size']} px text: {m['text']!r}" for m in metrics if m["size"] < 16]
    problems += [
        f"contrast {m['contrast']:.2f}: {m['text']!r}" for m in metrics if m["contrast"] < 4.5
    ]
    return problems


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serving_directory(folder: Path) -> Iterator[str]:
    """Serve a folder the way a static host does (index.html for a folder) on 127.0.0.1 in a
    thread; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
