"""`newsletter archive build`: collect what was sent, render every file of the site in memory, then
write only the files whose bytes changed, each atomically, and remove the files of pages that are
gone. Nothing is written when anything fails to validate or render.

The output holds no build time and lists everything in a fixed order, so building twice without
changes gives the same bytes, and a rebuild touches no file (static hosts and rsync see no change).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..config import Settings, display_path
from ..errors import ArchiveError, TemplateError
from ..store import Database
from .collect import ArchiveContent, collect_archive, sent_dates
from .feeds import FEED_PATH, SITEMAP_PATH, atom_feed, sitemap
from .pages import ASSETS, TEMPLATES, PageBuilder
from .search import SEARCH_INDEX_PATH, search_index

# The list of files the last build wrote: a rebuild removes only files on it, never anything
# else that may be in the folder, and refuses a non-empty folder that has no such list.
MANIFEST = ".archive-files"


@dataclass
class BuildResult:
    output: Path
    issues: tuple[str, ...]  # archived issue ids, newest first
    left_out: tuple[str, ...]  # sent with `archive: false`
    files: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> int:
        return len(self.files) - len(self.written)


def render_site(settings: Settings, content: ArchiveContent) -> dict[str, bytes]:
    """Every file of the archive (path below the root → bytes), in path order."""
    pages = PageBuilder(settings, content)
    files = {page.file: page.html.encode("utf-8") for page in pages.all_pages()}
    files[FEED_PATH] = atom_feed(settings, content, pages)
    files[SITEMAP_PATH] = sitemap(settings, content)
    files[SEARCH_INDEX_PATH] = search_index(settings, content)
    for name in ASSETS:
        path = settings.paths.templates / TEMPLATES / name
        try:
            files[name] = path.read_bytes()
        except OSError as exc:
            raise TemplateError(f"{display_path(path)}: cannot read: {exc.strerror}") from None
    return dict(sorted(files.items()))


def build_archive(
    settings: Settings, db: Database | None, output: str | os.PathLike | None = None
) -> BuildResult:
    """Build the archive into `output` (default: the settings' `paths.site`).

    `db` is the workspace's database (None when there is none yet: nothing was sent).
    """
    if settings.archive_base is None:
        raise ArchiveError(
            "archive_url is not set in the settings: the archive's canonical links, feed and "
            "sitemap need its public address (for example archive_url: https://example.org/archive/)"
        )
    content = collect_archive(settings, sent_dates(db))
    files = render_site(settings, content)
    folder = Path(output) if output is not None else settings.paths.site
    written, removed = write_site(folder, files)
    return BuildResult(
        output=folder,
        issues=tuple(archived.id for archived in content.issues),
        left_out=content.left_out,
        files=list(files),
        written=written,
        removed=removed,
    )


def write_site(folder: Path, files: dict[str, bytes]) -> tuple[list[str], list[str]]:
    """Write the changed files, remove those of the last build that are gone; returns both lists."""
    shown = display_path(folder)
    manifest = folder / MANIFEST
    if folder.exists() and not folder.is_dir():
        raise ArchiveError(f"{shown}: exists and is not a folder")
    if folder.is_dir() and not manifest.is_file() and any(folder.iterdir()):
        raise ArchiveError(
            f"{shown}: the folder is not empty and was not written by `newsletter archive "
            "build`; choose a new or empty folder with -o"
        )
    try:
        before = _read_manifest(manifest)
        written = [path for path, data in files.items() if write_if_changed(folder / path, data)]
        removed = sorted(before - set(files))
        for path in removed:
            _remove(folder, path)
        write_if_changed(manifest, "".join(f"{path}\n" for path in files).encode("utf-8"))
    except OSError as exc:
        where = display_path(Path(exc.filename)) if exc.filename else shown
        raise ArchiveError(f"{where}: cannot write the archive: {exc.strerror}") from None
    return written, removed


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` unless the file holds exactly it already; atomically (a temporary file
    renamed into place), so a reader or a crash never sees half a page. True when written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _read_manifest(manifest: Path) -> set[str]:
    if not manifest.is_file():
        return set()
    paths = set()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        parts = PurePosixPath(line).parts
        # Only plain relative paths below the folder: an edited list cannot reach outside it.
        if line and not PurePosixPath(line).is_absolute() and ".." not in parts:
            paths.add(line)
    return paths


def _remove(folder: Path, path: str) -> None:
    """Remove one file of an earlier build, then the folders it leaves empty."""
    target = folder / path
    target.unlink(missing_ok=True)
    parent = target.parent
    while parent != folder and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
