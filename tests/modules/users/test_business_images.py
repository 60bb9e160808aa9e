"""Hive images: uploads judged by their bytes, limits, content-addressed files served
with a long cache lifetime, cover and order, external URLs."""

from __future__ import annotations

import io
import secrets
import zlib
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from bizzyd_proc import wait_for

from .business_support import HIVE, bearer, expect, start
from .conftest import PROJECT, emulator_address, new_token, sql

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def biz(tmp_path_factory: pytest.TempPathFactory, users_dsn: str) -> Iterator[httpx.Client]:
    yield from start(tmp_path_factory, users_dsn, emulator_address(), PROJECT)


@pytest.fixture
def own_hive(biz: httpx.Client) -> tuple[dict[str, str], int]:
    h = bearer(new_token(biz.emulator))
    account = expect(biz.post("/v1/accounts", json={"name": "Img"}, headers=h), 201)["id"]
    hive = expect(biz.post(f"/v1/accounts/{account}/hives", json=HIVE, headers=h), 201)
    return h, hive["id"]


def picture(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    colour = tuple(secrets.randbelow(256) for _ in range(3))
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def files(biz: httpx.Client) -> set[str]:
    return {p.name for p in biz.images.rglob("*") if p.is_file()} if biz.images.exists() \
        else set()


@pytest.mark.parametrize(("fmt", "ext"), [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_an_upload_is_told_by_its_bytes_and_served_immutable(biz: httpx.Client, own_hive: tuple,
                                                             fmt: str, ext: str) -> None:
    h, hive = own_hive
    data = picture(fmt)
    # a misleading Content-Type changes nothing: the bytes decide
    r = biz.post(f"/v1/hives/{hive}/images", content=data,
                 headers={**h, "Content-Type": "image/gif"})
    image = expect(r, 201)
    assert image["kind"] == "cover" and image["position"] == 0
    assert image["url"].endswith(f".{ext}")
    path = image["url"].split("/images/", 1)[1]
    served = biz.get(f"/images/{path}")
    assert served.status_code == 200 and served.content == data
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    wait_for(lambda: [i["url"] for i in biz.get(f"/v1/hives/{hive}/images").json()["items"]]
             == [image["url"]], timeout=10, what="the public image list")


def test_refused_uploads_write_nothing(biz: httpx.Client, own_hive: tuple) -> None:
    h, hive = own_hive
    before = files(biz)
    url = f"/v1/hives/{hive}/images"
    expect(biz.post(url, content=b"GIF89a not really", headers=h), 415)
    expect(biz.post(url, content=b"%PDF-1.4\n" * 10, headers=h), 415)
    expect(biz.post(url, content=b"", headers=h), 415)
    expect(biz.post(url, content=picture("PNG")[:60], headers=h), 422, "body")   # damaged
    expect(biz.post(url, content=picture("PNG", (2100, 2000)), headers=h), 422, "body")
    expect(biz.post(url, content=bomb(), headers=h), 422, "body")
    too_big = biz.post(url, content=b"\xff\xd8\xff" + secrets.token_bytes(1_100_000), headers=h)
    expect(too_big, 413)
    assert files(biz) == before
    assert sql(biz.dsn, "SELECT count(*) FROM hive_image WHERE hive_id = $1", hive)[0][0] == 0


def bomb() -> bytes:
    """A PNG of 30000 x 30000 one-bit pixels in a few KiB (900 Mpx when decoded)."""
    side = 30000
    row = b"\x00" + b"\x00" * (side // 8)
    raw = zlib.compress(row * side, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw)
            + chunk(b"IEND", b""))


def test_cover_order_external_urls_and_delete(biz: httpx.Client, own_hive: tuple) -> None:
    h, hive = own_hive
    url = f"/v1/hives/{hive}/images"
    first = expect(biz.post(url, content=picture("PNG"), headers=h), 201)
    second = expect(biz.post(url, json={"url": "https://cdn.example.com/a.jpg",
                                        "caption": "the bar"}, headers=h), 201)
    assert (second["kind"], second["position"], second["caption"]) == ("secondary", 1, "the bar")
    expect(biz.post(url, json={"url": "ftp://example.com/a.jpg"}, headers=h), 422, "url")
    r = biz.patch(f"/v1/images/{second['id']}", json={"kind": "cover", "position": 0},
                  headers=h)
    assert expect(r, 200)["kind"] == "cover"
    kinds = sql(biz.dsn, "SELECT id, kind FROM hive_image WHERE hive_id = $1 ORDER BY id", hive)
    assert [(k["id"], k["kind"]) for k in kinds] == [(first["id"], "secondary"),
                                                      (second["id"], "cover")]
    wait_for(lambda: biz.get(url).json()["items"][0]["id"] == second["id"], timeout=10,
             what="the public list shows the new cover first")
    expect(biz.delete(f"/v1/images/{first['id']}", headers=h), 204)
    expect(biz.delete(f"/v1/images/{first['id']}", headers=h), 404)
    # the same bytes are stored once
    data = picture("PNG")
    a = expect(biz.post(url, content=data, headers=h), 201)
    b = expect(biz.post(url, content=data, headers=h), 201)
    assert a["url"] == b["url"] and a["id"] != b["id"]
