"""The operators' queue console: plain HTML pages on a prefix location (e.g. `/queues/`).

    GET  PREFIX                  every queue: visible, in flight, delayed, its DLQ
    GET  PREFIX{name}            settings, depths, the next messages (peek: nothing is
                                 received), and buttons for purge and redrive
    POST PREFIX{name}/purge      delete every message of the queue
    POST PREFIX{name}/redrive    move a dead-letter queue's messages back where they came

Protect the location with `access` rules: the buttons change state.
"""

from __future__ import annotations

import datetime as dt
import html
from urllib.parse import quote

from bizzyd.http.phases import Request
from bizzyd.http.response import Response

from .store import Message, QueueError, QueueInfo, Queues

HTML = "text/html; charset=utf-8"
PEEK = 50
STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#eee}
form{display:inline}.note{color:#060}.error{color:#a00}pre{margin:0;white-space:pre-wrap}"""


def _page(title: str, body: str, status: int = 200) -> Response:
    text = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{body}</body></html>")
    return Response(status, text, [("Cache-Control", "no-store")], content_type=HTML)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _base(request: Request) -> str:
    loc = request.location
    base = loc.pattern if loc is not None and loc.kind in ("prefix", "caret") else "/queues/"
    return base if base.endswith("/") else base + "/"


async def _index(q: Queues, base: str, note: str) -> Response:
    infos = await q.list()
    dlqs = {i.dead_letter_queue for i in infos if i.dead_letter_queue}
    rows = []
    for info in infos:
        s = await q.stats(info.name)
        kind = "FIFO" if info.fifo else "standard"
        role = " (dead-letter queue)" if info.name in dlqs else ""
        rows.append(
            f"<tr data-queue='{html.escape(info.name)}'><td><a href='{base}"
            f"{quote(info.name)}'>{html.escape(info.name)}</a>{role}</td><td>{kind}</td>"
            f"<td class=visible>{s.visible}</td><td class=inflight>{s.in_flight}</td>"
            f"<td class=delayed>{s.delayed}</td>"
            f"<td>{html.escape(info.dead_letter_queue or '-')}</td></tr>")
    table = ("<table id=queues><tr><th>queue</th><th>type</th><th>visible</th>"
             "<th>in flight</th><th>delayed</th><th>dead-letter queue</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p>No queues.</p>"
    return _page("Queues", _note(note) + table)


def _note(note: str) -> str:
    return f"<p class=note id=note>{html.escape(note)}</p>" if note else ""


def _message_row(m: Message, now: float) -> str:
    state = ("visible" if m.visible_at <= now else "in flight" if m.received
             else "delayed")
    body = m.body if len(m.body) <= 200 else m.body[:200] + "…"
    return (f"<tr><td><code>{m.id}</code></td><td><pre>{html.escape(body)}</pre></td>"
            f"<td>{state}</td><td>{m.receive_count}</td><td>{_when(m.sent_at)}</td>"
            f"<td>{html.escape(m.group_id or '-')}</td></tr>")


async def _detail(q: Queues, info: QueueInfo, base: str, note: str) -> Response:
    import time

    s = await q.stats(info.name)
    peeked = await q.peek(info.name, PEEK)
    now = time.time()
    is_dlq = any(i.dead_letter_queue == info.name for i in await q.list())
    settings = "".join(
        f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in (
            ("type", "FIFO" if info.fifo else "standard"),
            ("visibility timeout", f"{info.visibility_timeout} s"),
            ("delay", f"{info.delay_seconds} s"), ("retention", f"{info.retention_seconds} s"),
            ("dead-letter queue", info.dead_letter_queue or "-"),
            ("max receives", info.max_receives or "-"),
            ("visible", s.visible), ("in flight", s.in_flight), ("delayed", s.delayed)))
    action = f"{base}{quote(info.name)}"
    buttons = (f"<form method=post action='{action}/purge'><button id=purge>Purge</button>"
               "</form>")
    if is_dlq:
        buttons += (f" <form method=post action='{action}/redrive'>"
                    "<button id=redrive>Redrive to source queues</button></form>")
    messages = ("<table id=messages><tr><th>id</th><th>body</th><th>state</th>"
                "<th>receives</th><th>sent</th><th>group</th></tr>"
                + "".join(_message_row(m, now) for m in peeked) + "</table>"
                if peeked else "<p id=messages>No messages.</p>")
    body = (f"<p><a href='{base}'>all queues</a></p>{_note(note)}<table id=settings>"
            f"{settings}</table><p>{buttons}</p><h2>Next {PEEK} messages (peek)</h2>"
            f"{messages}")
    return _page(f"Queue {info.name}", body)


async def queue_console(request: Request) -> Response:
    q: Queues = request.process.state["queue"].queues
    base = _base(request)
    rest = request.path[len(base):] if request.path.startswith(base) else ""
    note = ""
    for part in request.query.split("&"):
        if part.startswith("note="):
            from urllib.parse import unquote_plus
            note = unquote_plus(part[5:])[:200]
    try:
        if not rest:
            return await _index(q, base, note)
        name, _, action = rest.partition("/")
        info = await q.get(name, fresh=True)
        if not action:
            return await _detail(q, info, base, note)
        return await _act(request, q, info, action, base)
    except QueueError as exc:
        return _page("Queue console", f"<p class=error>{html.escape(exc.message)}</p>"
                     f"<p><a href='{base}'>all queues</a></p>", 404 if exc.code ==
                     "QueueDoesNotExist" else 400)


async def _act(request: Request, q: Queues, info: QueueInfo, action: str,
               base: str) -> Response:
    if request.method != "POST":
        return _page("Queue console", "<p class=error>use the buttons (POST)</p>", 405)
    if action == "purge":
        note = f"purged {await q.purge(info.name)} messages"
    elif action == "redrive":
        note = f"moved {await q.redrive(info.name)} messages back to their queues"
    else:
        return _page("Queue console", "<p class=error>unknown action</p>", 404)
    target = f"{base}{quote(info.name)}?note={quote(note)}"
    return Response(303, b"", [("Location", target)])
