"""The error log: levels, line format, and reopening (USR1) that cannot lose the log."""

from __future__ import annotations

import os

from bizzyd.log import open_log


def test_lines_carry_level_and_pid_and_respect_the_level(tmp_path):
    path = tmp_path / "logs" / "error.log"
    log = open_log(str(path), "notice", name="t-levels")
    log.info("hidden")
    log.notice("shown %d", 1)
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"[notice] {os.getpid()}: shown 1")


def test_reopen_follows_a_rotated_file(tmp_path):
    path = tmp_path / "error.log"
    log = open_log(str(path), "notice", name="t-rotate")
    log.notice("before")
    path.rename(tmp_path / "error.log.1")
    log.reopen()
    log.notice("after")
    log.close()
    assert "before" in (tmp_path / "error.log.1").read_text()
    assert "after" in path.read_text() and "before" not in path.read_text()


def test_a_failed_reopen_keeps_writing_to_the_old_file(tmp_path):
    """The new file cannot be opened (a directory now has its name)."""
    path = tmp_path / "logs" / "error.log"
    log = open_log(str(path), "notice", name="t-fail")
    log.notice("before")
    path.rename(tmp_path / "logs" / "error.log.1")
    path.mkdir()
    log.reopen()
    log.notice("after")
    log.close()
    text = (tmp_path / "logs" / "error.log.1").read_text()
    assert "cannot reopen" in text and "after" in text


def test_reopen_works_through_the_directory_when_the_path_above_is_gone(tmp_path):
    """The directory is held open: a process whose user cannot traverse the prefix
    (here: the path to it no longer exists) still reopens the file inside it."""
    path = tmp_path / "a" / "logs" / "error.log"
    log = open_log(str(path), "notice", name="t-dirfd")
    (tmp_path / "a").rename(tmp_path / "b")
    moved = tmp_path / "b" / "logs" / "error.log"
    moved.rename(moved.with_suffix(".log.1"))
    log.reopen()
    log.notice("after")
    log.close()
    assert "after" in moved.read_text()
