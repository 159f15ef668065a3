"""The search page's index (`search.json`): for each summary ever sent, the key of its entry on
the search page and the words to match, lower case and without accents (as search.js folds the
query). Titles, headlines, teasers, journals and topics: a few hundred bytes
a summary, so even years of issues stay a small download for a static host."""

from __future__ import annotations

import json
import unicodedata

from ..config import Settings
from .collect import ArchiveContent

SEARCH_INDEX_PATH = "search.json"


def fold(text: str) -> str:
    """Lower case, accents removed, spaces collapsed: "Zoë's MRI" → "zoe's mri"."""
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(c for c in decomposed if not unicodedata.category(c).startswith("M"))
    return " ".join(bare.lower().split())


def search_index(settings: Settings, content: ArchiveContent) -> bytes:
    labels = settings.topic_labels
    records = []
    for entry in content.entries():
        s = entry.summary
        words = [s.title, s.headline, s.teaser or "", s.journal]
        words += [labels[slug] for slug in s.topics]
        records.append({"key": entry.anchor_path, "text": fold(" ".join(words))})
    text = json.dumps(records, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    # The same JSON, but no markup characters even in the raw bytes, should anything ever read
    # the file as HTML.
    for char in "<>&":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text.encode("utf-8") + b"\n"
