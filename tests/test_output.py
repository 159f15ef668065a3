"""`-o FILE` (export, render): a regular file is replaced atomically, anything else is written to
in place; a device, a FIFO or a symlink is never replaced by a regular file."""
# Not both_engines: writing -o files, no database.

from __future__ import annotations

import os
import stat
import threading

import pytest

from newsletter.errors import NewsletterError
from newsletter.output import open_output
from tests.support.delivery import ISSUE, add_people

COMMANDS = {
    "export": ["subscribers", "export", "-o"],
    "render": ["render", ISSUE, "--format", "text", "-o"],
}


@pytest.fixture
def people(db):
    add_people(db)
    db.close()


def device(path, major: int, minor: int):
    """A character device node like /dev/null (1, 3) or /dev/full (1, 7), in the test's folder."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("creating a device node needs root (CAP_MKNOD)")
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_output_to_a_full_device_is_an_error_and_the_device_stays(run, workspace, people, command):
    full = device(workspace / "full", 1, 7)
    result = run(*COMMANDS[command], "full")
    assert result.exit_code == 1
    assert result.stderr == "error: full: cannot write: No space left on device\n"
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert not [p.name for p in workspace.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", COMMANDS)
def test_output_to_a_null_device_succeeds_and_the_device_stays(run, workspace, people, command):
    null = device(workspace / "null", 1, 3)
    result = run(*COMMANDS[command], "null")
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_reader_gets_the_output_and_the_fifo_stays(run, workspace, people, command):
    fifo = workspace / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run(*COMMANDS[command], "pipe")
    assert result.exit_code == 0, result.stderr
    reader.join(timeout=30)  # a bound for a broken writer, not a wait for a result
    assert not reader.is_alive(), "the reader got nothing: the FIFO was replaced"
    assert received[0]
    if command == "export":
        assert received[0].startswith(b"email,name,topics,status\nall1@example.org,")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_symlink_stays_a_link_and_its_target_gets_the_output(run, workspace, people, command):
    (workspace / "kept").mkdir()
    target = workspace / "kept" / "real.out"
    target.write_text("old contents\n")
    link = workspace / "link.out"
    link.symlink_to(target)
    result = run(*COMMANDS[command], "link.out")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and link.resolve() == target
    text = target.read_text(encoding="utf-8")
    assert "old contents" not in text
    assert "all1@example.org" in text if command == "export" else "Unsubscribe" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_a_regular_file_is_replaced_whole_and_keeps_its_permissions(
    run, workspace, people, command
):
    out = workspace / "private.out"
    out.write_text("old contents\n")
    out.chmod(0o600)
    result = run(*COMMANDS[command], "private.out")
    assert result.exit_code == 0, result.stderr
    assert "old contents" not in out.read_text(encoding="utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in workspace.iterdir() if "private" in p.name) == ["private.out"]


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temp_file(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old contents\n")
    with pytest.raises(RuntimeError), open_output(out) as stream:
        stream.write("half of the new ")
        raise RuntimeError("the export broke off")
    assert out.read_text() == "old contents\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_new_file_is_written_and_a_missing_folder_is_a_clear_error(tmp_path):
    with open_output(tmp_path / "new.txt") as stream:
        stream.write("fresh\n")
    assert (tmp_path / "new.txt").read_text() == "fresh\n"
    missing = tmp_path / "missing" / "new.txt"
    with (
        pytest.raises(NewsletterError, match="cannot write: No such file or directory"),
        open_output(missing) as stream,
    ):
        stream.write("x")
