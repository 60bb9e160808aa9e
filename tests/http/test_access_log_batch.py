"""The access log formats records in batches, after the request: each line still
shows its own request's time, and a small buffer is not held back by the batch."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

from bizzyd.http.builtin.access_log import (
    BATCH,
    BUILTIN_FORMATS,
    LogFile,
    compile_format,
    line_env,
)

HEADERS = [(b"Host", b"example.org"), (b"User-Agent", b"batch-test")]
SERVER = SimpleNamespace(config={"server_name": ["batch.example"]})


def record(path: str, when: float, status: int = 200, server: object = SERVER) -> tuple:
    return ("192.0.2.7", "GET", path.encode(), path, "1.1", HEADERS, status, 5, 1,
            server, None, 0.25, when, None)


def log_file(tmp_path: Path, buffer: int) -> LogFile:
    context = SimpleNamespace(loop=None, log=logging.getLogger("test"))  # no loop: no timer
    return LogFile(str(tmp_path / "access.log"), buffer, 1.0, context)  # type: ignore[arg-type]


def lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "access.log"
    return path.read_text().splitlines() if path.exists() else []


def test_records_wait_for_a_full_batch_then_for_the_buffer(tmp_path: Path):
    line = compile_format(BUILTIN_FORMATS["combined"], line_env())
    f = log_file(tmp_path, 64 * 1024)
    now = time.time()
    for i in range(BATCH - 1):
        f.add(line, record(f"/r/{i}", now))
    assert len(f.pending) == BATCH - 1 and f.lines == []
    f.add(line, record("/r/last", now))
    assert f.pending == [] and len(f.lines) == BATCH  # formatted, not yet written
    assert lines(tmp_path) == []
    f.flush()
    written = lines(tmp_path)
    assert len(written) == BATCH and '"GET /r/last HTTP/1.1" 200 5 "-" "batch-test"' \
        in written[-1]
    f.close()


def test_each_line_has_its_own_requests_time_even_out_of_order(tmp_path: Path):
    line = compile_format(BUILTIN_FORMATS["combined"], line_env())
    f = log_file(tmp_path, 64 * 1024)
    now = float(int(time.time()))
    for when in (now, now - 3600, now + 0.5, now + 1, now - 3600):
        f.add(line, record("/t", when))
    f.flush()
    stamps = [re_time(text) for text in lines(tmp_path)]
    expected = [time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(when)))
                for when in (now, now - 3600, now, now + 1, now - 3600)]
    assert stamps == expected
    f.close()


def test_request_time_and_args_come_from_the_record(tmp_path: Path):
    line = compile_format(BUILTIN_FORMATS["json"], line_env())
    f = log_file(tmp_path, 0)  # buffer 0: every record is formatted and written at once
    f.add(line, record("/q?x=1&y=%22", time.time()))
    (text,) = lines(tmp_path)
    assert '"request_time":0.250' in text and '"args":"x=1&y=%22"' in text
    f.close()


def test_a_small_buffer_is_written_when_it_fills(tmp_path: Path):
    line = compile_format(BUILTIN_FORMATS["combined"], line_env())
    f = log_file(tmp_path, 400)  # smaller than a batch's worth: a record at a time
    size = count = 0
    while size < 400:
        assert lines(tmp_path) == []
        rec = record(f"/s/{count}", time.time())
        size += len(line(rec))
        count += 1
        f.add(line, rec)
    assert len(lines(tmp_path)) == count > 1
    f.close()


def test_a_record_that_cannot_be_formatted_loses_only_itself(tmp_path: Path, caplog):
    line = compile_format(BUILTIN_FORMATS["json"], line_env())  # reads the server's name
    f = log_file(tmp_path, 64 * 1024)
    f.add(line, record("/a", time.time()))
    f.add(line, record("/broken", time.time(), server=None))
    f.add(line, record("/b", time.time()))
    f.flush()
    assert [json.loads(text)["uri"] for text in lines(tmp_path)] == ["/a", "/b"]
    assert "cannot format a record" in caplog.text
    f.close()


def re_time(text: str) -> str:
    return text.split("[", 1)[1].split("]", 1)[0]
