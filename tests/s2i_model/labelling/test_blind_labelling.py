"""Labelling is blind to the model: a pool of two models' runs (named, as `sample` names them, after
their folders: ``s2i`` and ``aivae``) is labelled through opaque ids, and nothing the server sends
(the page, the JSON it fetches, image URLs, headers), nor anything the page shows in a real
headless Chromium, names a picture's run, model, key or file; each label still lands in labels.csv
against the picture's real id, and the pictures come in an order that mixes the models.

Each picture is told by its bytes (every one differs), so these tests check the server's mapping
from outside, not through its own table."""

from __future__ import annotations

import csv
import http.client
import json
from pathlib import Path

import pytest
from PIL import Image

from s2i_model.labelling.store import read_labels, read_pool

from test_labelling import Page, Running, label_lines

RUNS = {"s2i": "s2i", "aivae": "aivae"}  # run folder name: model
CLASSES = ["baby", "dog"]
KEYS = {c: [f"zq{c}_{j:02d}" for j in range(4)] for c in CLASSES}  # a sound's key: no hex digits, found if sent


def make_pool(root: Path) -> Path:
    """8 pictures of each run, written as `sample` writes them: pool.csv holds one run's rows, then
    the other's."""
    rows = []
    for r, (run, model) in enumerate(RUNS.items()):
        for c in CLASSES:
            for j, key in enumerate(KEYS[c]):
                id = f"{run}.{key}-s0-0"
                img = Image.new("RGB", (32, 32), (40 + 150 * r, 60 + 100 * CLASSES.index(c), 30 * j))
                img.putpixel((j, r), (255, 255, 255))
                (root / "images" / c).mkdir(parents=True, exist_ok=True)
                img.save(root / "images" / c / f"{id}.png")
                rows.append({"id": id, "file": f"images/{c}/{id}.png", "class": c, "key": key, "sample": "0",
                             "run": run, "model": model})
    with open(root / "pool.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "pool.json").write_text(json.dumps({"classes": CLASSES, "target": 3, "split": "val",
                                                "runs": {run: {"model": m, "path": f"/runs/{run}"} for run, m in RUNS.items()}}))
    return root


@pytest.fixture
def pool(tmp_path) -> Path:
    return make_pool(tmp_path / "pool")


def secrets_of(pool: Path) -> list[str]:
    """What must never reach the browser: the runs', models' and keys' names, the ids, the files."""
    rows = read_pool(pool)
    return sorted({*RUNS, *RUNS.values(), *(r["key"] for r in rows), *(r["id"] for r in rows),
                   *(r["file"] for r in rows)})


def leaks(pool: Path, text: str) -> list[str]:
    return [s for s in secrets_of(pool) if s.lower() in text.lower()]


def by_bytes(pool: Path) -> dict[bytes, str]:
    return {(pool / r["file"]).read_bytes(): r["id"] for r in read_pool(pool)}


def exchange(app: Running, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers as text, body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, "\n".join(f"{k}: {v}" for k, v in r.getheaders()), r.read()
    conn.close()
    return out


def wanted(id: str) -> str:
    """The label the tests give a picture: mixed over runs, classes and keys."""
    run, key = id.split(".")[0], id.split(".")[1].split("-")[0]
    return "informative" if (run == "s2i") != (int(key[-1]) % 2 == 1) else "not"


def post(app: Running, id, label: str):
    return exchange(app, "POST", "/api/label", json.dumps({"id": id, "label": label}).encode(),
                    {"Content-Type": "application/json"})


def test_nothing_sent_names_the_run_model_or_key_and_labels_land_on_the_real_ids(pool):
    app = Running(pool)
    try:
        sent = []  # every answer's headers and text, and every URL the page is given
        status, headers, page = exchange(app, "GET", "/")
        assert status == 200
        sent += [headers, page.decode()]
        status, headers, body = exchange(app, "GET", "/api/state")
        assert status == 200
        sent += [headers, body.decode()]
        items = json.loads(body)["items"]
        assert len(items) == 16 and len({i["id"] for i in items}) == 16 and len({i["src"] for i in items}) == 16
        pictures, shown = by_bytes(pool), []
        for item in items:
            status, headers, image = exchange(app, "GET", item["src"])
            assert status == 200 and image in pictures, item  # the server's bytes, nothing added
            shown.append(pictures[image])
            sent.append(headers)
        assert sorted(shown) == sorted(pictures.values())  # every picture once, each by its own opaque id
        assert not leaks(pool, "\n".join(sent)), leaks(pool, "\n".join(sent))  # the page, its JSON, the images
        for item, id in zip(items, shown):
            status, headers, body = post(app, item["id"], wanted(id))
            assert status == 200, body
            sent += [headers, body.decode()]
        assert not leaks(pool, "\n".join(sent)), leaks(pool, "\n".join(sent))  # and the answers to labels

        # labels.csv keeps the real ids, each with the label given to its picture
        assert sorted(label_lines(pool)) == sorted((id, wanted(id)) for id in shown)
        assert read_labels(pool) == {id: wanted(id) for id in shown}

        # the real id, its file or a picture's URL is no id the server takes: nothing is written
        before = (pool / "labels.csv").read_bytes()
        row = read_pool(pool)[0]
        for fake in [row["id"], row["file"], "/" + row["file"], items[0]["src"], items[0]["id"].upper()]:
            status, _, body = post(app, fake, "not")
            assert status == 400 and b"unknown picture" in body and not leaks(pool, body.decode()), (fake, body)
        assert (pool / "labels.csv").read_bytes() == before
        assert exchange(app, "GET", "/" + row["file"])[0] == 404  # no picture by its file's name either
    finally:
        app.stop()


def test_the_order_mixes_the_models_is_fixed_and_the_opaque_ids_are_new_per_server(pool):
    orders, ids = [], []
    for _ in range(2):
        app = Running(pool)
        try:
            items = json.loads(exchange(app, "GET", "/api/state")[2])["items"]
            pictures = by_bytes(pool)
            orders.append([pictures[exchange(app, "GET", i["src"])[2]] for i in items])
            ids.append({i["id"] for i in items})
        finally:
            app.stop()
    runs = [id.split(".")[0] for id in orders[0]]
    assert runs != [r["run"] for r in read_pool(pool)]  # not pool.csv's order, one run after the other
    assert sum(a != b for a, b in zip(runs, runs[1:])) >= 4, runs  # interleaved: grouped by run changes once
    assert set(runs[:8]) == set(runs[8:]) == set(RUNS), runs  # both models in each half
    assert orders[1] == orders[0]  # a fixed seed: the same order every time
    assert not ids[0] & ids[1]  # drawn anew by each server: an id learnt once says nothing next time


def test_the_page_in_chromium_shows_nothing_of_the_source_and_labels_by_key(pool, chromium):
    app = Running(pool)
    page = Page(chromium)
    pictures = by_bytes(pool)

    def seen() -> str:
        """All the browser holds: the document, its title, every image's address, alt and title,
        and the addresses of everything it fetched."""
        return "\n".join([chromium.title, chromium.current_url, chromium.page_source,
                          *chromium.execute_script("""
            return [document.documentElement.outerHTML, document.body.innerText,
                    ...[...document.images].map(i => [i.src, i.alt, i.title].join(' ')),
                    ...performance.getEntries().map(e => e.name)];""")])

    def showing() -> str:
        """The real id of the picture on show, told by its bytes."""
        src = chromium.find_element(page.By.ID, "image").get_attribute("src")
        return pictures[exchange(app, "GET", "/" + src.split("/", 3)[3])[2]]

    try:
        page.opaque, page.real = app.server.opaque, app.server.real  # for Page's helpers only
        chromium.get(app.url)
        page.wait("page loaded", lambda: chromium.execute_script("return document.body.dataset.ready") == "1")
        assert not leaks(pool, seen()), leaks(pool, seen())
        done = []
        for n in range(6):
            page.wait("image shown", lambda: chromium.execute_script("return document.querySelector('#image').complete"))
            id = showing()
            assert page.text("#class") == id.split(".")[1].split("_")[0][2:]  # the class, and only that, is shown
            assert page.text("#position") == f"{len(done) + 1} / 16"
            page.key("i" if wanted(id) == "informative" else "n")
            page.wait("moved on", lambda: page.text("#position") != f"{len(done) + 1} / 16")
            done.append(id)
        page.settled()
        assert not leaks(pool, seen()), leaks(pool, seen())  # the strip of labelled pictures too
        assert label_lines(pool) == [(id, wanted(id)) for id in done]
        assert len({id.split(".")[0] for id in done}) == 2  # the first six already hold both models' pictures
    finally:
        app.stop()
