"""The access log formats log records (LOG_FIELDS), a loop iteration's at a time:
each line shows its own request's values and time, whatever order the records
come in, and a record that cannot be formatted costs only its own line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

from bizzyd.http.builtin.access_log import (
    BUILTIN_FORMATS,
    STATE_KEY,
    LogFile,
    compile_format,
    line_env,
    log_records,
)

HEADERS = [(b"Host", b"example.org"), (b"User-Agent", b"records-test")]
SERVER = SimpleNamespace(config={"server_name": ["records.example"]})


def record(path: str, when: float, location: object, server: object = SERVER) -> tuple:
    raw = path.encode()
    return ("192.0.2.7", "GET", raw, path.partition("?")[0], "1.1", HEADERS, 200, 5, 9,
            server, location, 0.25, when, None)


def target(tmp_path: Path, fmt: str) -> tuple[SimpleNamespace, LogFile]:
    """A location whose access log (one file, buffer 0) is already looked up."""
    context = SimpleNamespace(loop=None, log=logging.getLogger("test"))
    log_file = LogFile(str(tmp_path / "access.log"), 0, 1.0, context)  # type: ignore[arg-type]
    line = compile_format(BUILTIN_FORMATS[fmt], line_env())
    return SimpleNamespace(state={STATE_KEY: ((line, log_file),)}), log_file


def lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "access.log").read_text().splitlines()


def test_each_line_has_its_own_requests_time_in_any_order(tmp_path: Path):
    location, log_file = target(tmp_path, "combined")
    now = float(int(time.time()))
    times = (now, now - 3600, now + 0.5, now + 1, now - 3600)
    log_records([record("/t", when, location) for when in times])
    stamps = [text.split("[", 1)[1].split("]", 1)[0] for text in lines(tmp_path)]
    assert stamps == [time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(when)))
                      for when in times]
    assert lines(tmp_path)[0].endswith('"GET /t HTTP/1.1" 200 5 "-" "records-test"')
    log_file.close()


def test_the_json_line_takes_its_values_from_the_record(tmp_path: Path):
    location, log_file = target(tmp_path, "json")
    log_records([record("/q?x=1&y=%22", time.time(), location)])
    (line,) = map(json.loads, lines(tmp_path))
    assert line["request_time"] == 0.25 and line["args"] == "x=1&y=%22"
    assert line["uri"] == "/q" and line["server_name"] == "records.example"
    assert line["connection"] == 9 and line["body_bytes_sent"] == 5
    log_file.close()


def test_a_record_that_cannot_be_formatted_loses_only_its_line(tmp_path: Path, caplog):
    location, log_file = target(tmp_path, "json")  # json reads the server's name
    log_records([record("/a", time.time(), location),
                 record("/broken", time.time(), location, server=None),
                 record("/b", time.time(), location)])
    assert [json.loads(text)["uri"] for text in lines(tmp_path)] == ["/a", "/b"]
    assert "*9 access log" in caplog.text and "cannot format a record" in caplog.text
    log_file.close()
