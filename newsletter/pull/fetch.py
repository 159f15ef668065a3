"""Fetching feeds and pages over HTTP, within limits: a timeout, a size cap, a redirect limit.

Every failure is a `FetchError` naming the URL and the reason in words an editor can act on; the
body is read as a stream and abandoned as soon as it passes the cap, so a 50 MB page costs at
most `max_bytes` of memory. Feeds are fetched conditionally (ETag / Last-Modified).
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from importlib import metadata
from urllib.parse import urlsplit

import httpx
import lxml.html

from ..config import SourceSettings


class FetchError(Exception):
    """A feed or page could not be fetched or decoded; `reason` says why, in one line."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True)
class Fetched:
    url: str  # as asked for
    final_url: str  # after redirects
    status: int
    headers: httpx.Headers
    body: bytes = b""

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        return _charset_param(self.headers.get("content-type", ""))


def user_agent(site: str) -> str:
    try:
        version = metadata.version("newsletter")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "dev"
    return f"newsletter/{version} (summaries pull; +{site})"


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n / 1024:.3g} KB"


class Fetcher:
    """One HTTP client for a whole pull (connections are reused between the feed and its pages)."""

    def __init__(
        self,
        source: SourceSettings,
        agent: str,
        transport: httpx.BaseTransport | None = None,
    ):
        self.timeout = source.timeout
        self.max_bytes = source.max_bytes
        self.max_redirects = source.max_redirects
        self.client = httpx.Client(
            timeout=httpx.Timeout(source.timeout),
            follow_redirects=True,
            max_redirects=source.max_redirects,
            headers={"User-Agent": agent},
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(
        self,
        url: str,
        accept: str = "*/*",
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> Fetched:
        """GET `url`; a 304 comes back as a `Fetched` with `not_modified` and no body."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise FetchError(url, "not an http(s) URL")
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        # httpx's timeout bounds each read; the deadline bounds the whole answer, so a server
        # that trickles a byte at a time cannot hold a pull for ever.
        deadline = time.monotonic() + self.timeout
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                final = str(response.url)
                if response.status_code == 304:
                    return Fetched(url, final, 304, response.headers)
                if response.status_code >= 400:
                    phrase = response.reason_phrase or ""
                    raise FetchError(url, f"HTTP {response.status_code} {phrase}".strip())
                if response.status_code != 200:
                    raise FetchError(url, f"unexpected HTTP status {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(url, self._too_large(int(declared)))
                body = bytearray()
                # iter_bytes decodes gzip/deflate: the cap applies to what we would keep.
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(url, self._too_large(None))
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("deadline")
                return Fetched(url, final, 200, response.headers, bytes(body))
        except httpx.TimeoutException:
            raise FetchError(url, f"timed out after {self.timeout:g} s") from None
        except httpx.TooManyRedirects:
            raise FetchError(
                url, f"too many redirects (more than {self.max_redirects}): a redirect loop?"
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise FetchError(url, f"redirected to a URL that is not http(s) ({exc})") from None
        except httpx.ConnectError as exc:
            raise FetchError(url, f"could not connect ({exc or 'connection refused'})") from None
        except httpx.RequestError as exc:
            raise FetchError(url, f"request failed: {type(exc).__name__}: {exc}") from None

    def _too_large(self, size: int | None) -> str:
        got = f" ({_megabytes(size)})" if size else ""
        return f"larger than the {_megabytes(self.max_bytes)} limit{got} (source.max_bytes)"


# Decoding pages ---------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _charset_param(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def _meta_charset(body: bytes) -> str | None:
    """The charset a page declares in `<meta>` (HTML looks for it in the first 1024 bytes)."""
    head = body[:4096].decode("latin-1")  # any byte decodes; the declaration itself is ASCII
    try:
        doc = lxml.html.fromstring(head or "<html></html>")
    except Exception:  # noqa: BLE001 - a page with no parsable head simply declares nothing
        return None
    for meta in doc.iter("meta"):
        if meta.get("charset"):
            return meta.get("charset").strip()
        if (meta.get("http-equiv") or "").lower() == "content-type":
            found = _charset_param(meta.get("content") or "")
            if found:
                return found
    return None


def decode_page(fetched: Fetched) -> str:
    """The page's text: a byte-order mark, else the HTTP charset, else `<meta charset>`, else UTF-8.

    A page that is not valid text in its declared charset is refused rather than turned into
    replacement characters in a summary. An undeclared page that is not UTF-8 is read as
    windows-1252, as browsers do.
    """
    body = fetched.body
    for bom, name in _BOMS:
        if body.startswith(bom):
            return _decode(fetched, body, name, "byte-order mark")
    charset = fetched.charset
    if charset:
        return _decode(fetched, body, charset, "Content-Type header")
    charset = _meta_charset(body)
    if charset:
        return _decode(fetched, body, charset, "<meta charset>")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("windows-1252", errors="replace")


def _decode(fetched: Fetched, body: bytes, charset: str, where: str) -> str:
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        raise FetchError(
            fetched.url, f"unknown charset {charset!r} (declared in {where})"
        ) from None
    try:
        text = body.decode(codec.name)
    except UnicodeDecodeError as exc:
        raise FetchError(
            fetched.url,
            f"not valid {charset} text at byte {exc.start} (charset declared in {where})",
        ) from None
    return text.removeprefix("\ufeff")
