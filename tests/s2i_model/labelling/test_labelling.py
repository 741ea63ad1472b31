"""The labelling page: label storage, the HTTP routes, and the page itself in a real headless Chromium."""

from __future__ import annotations

import csv
import http.client
import json
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from s2i_data.untrusted import Untrusted
from s2i_model.labelling.server import PICTURE, make_server, shown_order
from s2i_model.labelling.store import append_label, progress, read_labels, read_pool

from childprocs import ctrl_c_as_at_a_terminal

CLASSES = ["baby", "dog", "rail"]
COLOURS = {"baby": (230, 180, 170), "dog": (150, 110, 60), "rail": (90, 100, 120)}


def shown_class_by_class() -> list[str]:
    """Four ids per class, their clip numbers chosen so that the page, which shows a pool in its own
    fixed shuffled order (`shown_order`), shows them class by class: the page tests read in order."""
    ids: list[str] = []
    for c in CLASSES:
        for k in range(4):
            n = 1
            while shown_order([{"id": i} for i in [*ids, f"{c}_{k:03d}-clip_{n:04d}-{k}"]])[-1]["id"] != \
                    f"{c}_{k:03d}-clip_{n:04d}-{k}":
                n += 1
            ids.append(f"{c}_{k:03d}-clip_{n:04d}-{k}")
    return ids


IDS = shown_class_by_class()
B0, B1, B2, B3, D0, D1, D2, D3, R0, R1, R2, R3 = IDS


def make_pool(root: Path, target: int | None = 5) -> Path:
    rows = []
    for id in IDS:
        cls = id.split("_")[0]
        img = Image.new("RGB", (96, 96), COLOURS[cls])
        k = int(id[-1])
        for x in range(96):  # a different diagonal band per image, so they are told apart by eye
            for y in range(max(0, x - 8 - 4 * k), min(96, x + 8 + 4 * k)):
                img.putpixel((x, y), (255 - 40 * k, 240, 60 * k))
        file = f"images/{cls}/{id}.png"
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        img.save(root / file)
        rows.append({"id": id, "file": file, "class": cls, "key": id.split("-")[0], "sample": id[-1]})
    with open(root / "pool.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "file", "class", "key", "sample"])
        w.writeheader()
        w.writerows(rows)
    meta = {"classes": CLASSES, "run": "runs/test", "split": "val"} | ({"target": target} if target else {})
    (root / "pool.json").write_text(json.dumps(meta))
    (root / "secret.txt").write_text("outside the images")
    return root


@pytest.fixture
def pool(tmp_path) -> Path:
    return make_pool(tmp_path / "pool")


def label_lines(pool: Path) -> list[tuple[str, str]]:
    lines = (pool / "labels.csv").read_text().splitlines()
    assert lines[0] == "id,label,time"
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        datetime.fromisoformat(row[2])  # a real timestamp on every line
    return [(i, lab) for i, lab, _ in rows]


# ---- storage -----------------------------------------------------------------------------------

def test_read_pool_and_progress_without_labels(tmp_path):
    pool = make_pool(tmp_path, target=None)
    assert [r["id"] for r in read_pool(pool)] == IDS
    assert read_labels(pool) == {}
    assert progress(pool) == {c: {"informative": 0, "not": 0, "unlabelled": 4, "target": 500} for c in CLASSES}


def test_append_label_last_wins_and_progress(pool):
    for id, lab in [(B0, "informative"), (B1, "not"), (B0, "not"), (R2, "informative")]:
        append_label(pool, id, lab)
    assert label_lines(pool) == [(B0, "informative"), (B1, "not"), (B0, "not"), (R2, "informative")]
    assert read_labels(pool) == {B0: "not", B1: "not", R2: "informative"}
    assert progress(pool) == {"baby": {"informative": 0, "not": 2, "unlabelled": 2, "target": 5},
                              "dog": {"informative": 0, "not": 0, "unlabelled": 4, "target": 5},
                              "rail": {"informative": 1, "not": 0, "unlabelled": 3, "target": 5}}


def test_append_label_refuses_unknown_id_or_label(pool):
    append_label(pool, B0, "informative")
    before = (pool / "labels.csv").read_bytes()
    with pytest.raises(ValueError, match="unknown id 'cat_000'"):
        append_label(pool, "cat_000", "informative")
    with pytest.raises(ValueError, match="unknown label 'maybe'"):
        append_label(pool, B1, "maybe")
    assert (pool / "labels.csv").read_bytes() == before


def test_torn_last_line_is_ignored_then_cut_by_the_next_append(pool):
    append_label(pool, B0, "informative")
    append_label(pool, B1, "not")
    with open(pool / "labels.csv", "a") as f:
        f.write(f"{B2},informative,2024-01-0")  # the crash came before the newline
    assert read_labels(pool) == {B0: "informative", B1: "not"}
    append_label(pool, B3, "not")
    assert label_lines(pool) == [(B0, "informative"), (B1, "not"), (B3, "not")]
    assert read_labels(pool) == {B0: "informative", B1: "not", B3: "not"}


def test_torn_header_only(pool):
    (pool / "labels.csv").write_text("id,lab")
    assert read_labels(pool) == {}
    append_label(pool, D0, "not")
    assert label_lines(pool) == [(D0, "not")]


# ---- HTTP --------------------------------------------------------------------------------------

class Running:
    """The app in a thread on a free loopback port."""

    def __init__(self, pool: Path, host: str = "127.0.0.1", connect: str = "127.0.0.1"):
        self.server = make_server(pool, host=host, port=0)
        self.port = self.server.server_address[1]
        self.connect = connect
        self.url = f"http://127.0.0.1:{self.port}/"
        # A short poll: shutdown() waits for it, and tests start and stop many servers.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def token(self, id: str) -> str:
        """The opaque id by which the page knows picture ``id`` (from the server's table: in-process)."""
        return self.server.opaque[id]

    def src(self, id: str) -> str:
        return PICTURE + self.token(id)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        # http.client sends the path as written: no client-side ../ normalisation hides a traversal.
        conn = http.client.HTTPConnection(self.connect, self.port, timeout=5)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        out = r.status, r.read()
        conn.close()
        return out


@pytest.fixture
def running(pool):
    app = Running(pool)
    yield app
    app.stop()


def test_images_are_served_and_nothing_else(running, pool):
    status, body = running.request("GET", running.src(D1))
    assert status == 200 and body == (pool / f"images/dog/{D1}.png").read_bytes()
    for path in [f"/images/dog/{D1}.png", f"/picture/{D1}", "/picture/", running.src(D1) + "/../../pool.csv",  # by opaque id only
                 "/images/../pool.csv", "/images/%2e%2e/pool.csv", "/images/..%2fpool.csv", "/images/dog/../../secret.txt",
                 "/images/%2e%2e/%2e%2e/etc/passwd", "/pool.csv", "/labels.csv", "/secret.txt", "//etc/passwd",
                 "/images/dog/", f"/images/dog/{D1}.png/../../../pool.json"]:
        status, body = running.request("GET", path)
        assert status == 404, path
        assert b"outside the images" not in body and b"classes" not in body and b"root:" not in body


def test_pool_entry_outside_the_pool_refuses_the_pool(tmp_path):
    """A pool.csv row is checked when the pool is read (test_pool_untrusted.py has the rest): the
    server does not start on a pool that names a file outside it."""
    pool = make_pool(tmp_path / "pool")
    (tmp_path / "outside.png").write_bytes(b"private")
    with open(pool / "pool.csv", "a", newline="") as f:
        csv.writer(f).writerow(["evil", "../outside.png", "dog", "k", "0"])
    with pytest.raises(Untrusted, match="pool.csv line 14: file '../outside.png' is not images/<class>/<name>.png"):
        make_server(pool, port=0)


def test_state_and_label_api(running, pool):
    status, body = running.request("GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and [running.server.real[i["id"]] for i in state["items"]] == IDS and state["classes"] == CLASSES
    assert state["items"][4] == {"id": running.token(D0), "class": "dog", "src": running.src(D0), "label": None}
    post = lambda msg: running.request("POST", "/api/label", json.dumps(msg).encode(), {"Content-Type": "application/json"})
    status, body = post({"id": running.token(D0), "label": "informative"})
    assert status == 200
    assert json.loads(body)["progress"]["dog"] == {"informative": 1, "not": 0, "unlabelled": 3, "target": 5}
    for msg, words in [({"id": "cat_1", "label": "not"}, b"unknown picture"), ({"id": D1, "label": "not"}, b"unknown picture"),
                       ({"id": running.token(D1), "label": "yes"}, b"unknown label 'yes'"),
                       ([D1, "not"], b"expected"), ({"label": "not"}, b"unknown picture")]:
        status, body = post(msg)
        assert status == 400 and words in body and body.count(b"\n") == 1, (msg, body)
    status, body = running.request("POST", "/api/label", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and body.count(b"\n") == 1
    assert label_lines(pool) == [(D0, "informative")]


def test_stopped_server_takes_no_label_on_a_connection_opened_before(pool):
    app = Running(pool)
    spare = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    spare.connect()  # as browsers do ahead of need; the server accepts it and waits for a request
    app.request("GET", "/api/state")
    app.stop()
    with pytest.raises(OSError):
        spare.request("POST", "/api/label", json.dumps({"id": app.token(D0), "label": "not"}), {"Content-Type": "application/json"})
        spare.getresponse()
    assert read_labels(pool) == {}


def serve_in_child(pool: Path) -> subprocess.Popen:
    code = "import sys; from pathlib import Path; from s2i_model.labelling.server import serve; serve(Path(sys.argv[1]), port=0)"
    # SIGINT back to default in the child: a runner started in the background hands it an ignored one.
    return subprocess.Popen([sys.executable, "-u", "-c", code, str(pool)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ctrl_c_as_at_a_terminal)


def test_serve_prints_url_and_stops_cleanly_on_ctrl_c(pool):
    p = serve_in_child(pool)
    try:
        line = p.stdout.readline()
        assert "http://127.0.0.1:" in line and "12 images" in line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert b'id="informative"' in conn.getresponse().read()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode == 0 and "Traceback" not in err and "stopped" in out, (p.returncode, err)


# ---- what a web page elsewhere, or a name rebound to 127.0.0.1, must not be able to do ---------

def test_post_needs_json_from_this_page_at_this_address(running, pool):
    P = running.port
    body = json.dumps({"id": running.token(B0), "label": "informative"}).encode()
    json_ct = {"Content-Type": "application/json"}
    assert running.request("POST", "/api/label", body, json_ct)[0] == 200
    before = (pool / "labels.csv").read_bytes()
    for headers in [
        {"Content-Type": "application/x-www-form-urlencoded"},  # what a cross-site <form> can send
        {"Content-Type": "text/plain", "Origin": "http://evil.example"},  # <form enctype=text/plain>: JSON-looking
        {"Content-Type": "text/plain"},
        {},
        json_ct | {"Origin": "http://evil.example"},
        json_ct | {"Origin": "null"},
        json_ct | {"Origin": f"http://127.0.0.1:{P + 1}"},
        json_ct | {"Origin": f"https://127.0.0.1:{P}"},
        json_ct | {"Host": f"evil.example:{P}"},  # DNS rebinding: evil.example now resolves to 127.0.0.1
        json_ct | {"Host": f"evil.example:{P}", "Origin": f"http://evil.example:{P}"},
        json_ct | {"Host": f"127.0.0.1:{P + 1}"},
        json_ct | {"Host": "127.0.0.1"},
        json_ct | {"Host": f"localhost:{P}", "Origin": f"http://127.0.0.1:{P}"},  # another origin than the page's
    ]:
        status, reply = running.request("POST", "/api/label", body, headers)
        assert status in (403, 415) and reply.count(b"\n") == 1 and b"refused" in reply, (headers, status, reply)
    assert (pool / "labels.csv").read_bytes() == before
    for headers in [json_ct | {"Origin": f"http://127.0.0.1:{P}"},
                    {"Content-Type": "application/json; charset=utf-8", "Host": f"localhost:{P}", "Origin": f"http://LOCALHOST:{P}"},
                    json_ct | {"Host": f"[::1]:{P}", "Origin": f"http://[::1]:{P}"}]:
        assert running.request("POST", "/api/label", json.dumps({"id": running.token(B1), "label": "not"}).encode(),
                               headers)[0] == 200, headers
    assert label_lines(pool) == [(B0, "informative")] + [(B1, "not")] * 3


def test_get_answers_only_to_this_servers_address(running, pool):
    P = running.port
    paths = ["/", "/api/state", running.src(D1), "/nowhere"]
    for host in [f"evil.example:{P}", "evil.example", f"127.0.0.1.evil.example:{P}", f"localhost:{P + 1}"]:
        for path in paths:
            status, body = running.request("GET", path, headers={"Host": host})
            assert status == 403 and body.count(b"\n") == 1 and f"http://127.0.0.1:{P}/".encode() in body, (host, path, body)
    for host in [f"127.0.0.1:{P}", f"localhost:{P}", f"[::1]:{P}"]:
        assert [running.request("GET", path, headers={"Host": host})[0] for path in paths] == [200, 200, 200, 404], host


def test_another_bound_host_is_the_one_accepted(pool):
    app = Running(pool, host="127.0.0.2", connect="127.0.0.2")  # all of 127/8 is this machine's loopback
    try:
        assert app.request("GET", "/api/state", headers={"Host": f"127.0.0.2:{app.port}"})[0] == 200
        assert app.request("GET", "/api/state", headers={"Host": f"evil.example:{app.port}"})[0] == 403
    finally:
        app.stop()
    app = Running(pool, host="0.0.0.0")  # every interface: reached by any of this machine's addresses
    try:
        for host, status in [("127.0.0.1", 200), ("192.0.2.7", 200), ("[2001:db8::7]", 200), ("localhost", 200),
                             ("evil.example", 403), ("192.0.2.7.nip.io", 403)]:
            assert app.request("GET", "/api/state", headers={"Host": f"{host}:{app.port}"})[0] == status, host
        body = json.dumps({"id": app.token(B0), "label": "not"}).encode()
        assert app.request("POST", "/api/label", body, {"Content-Type": "application/json", "Host": f"192.0.2.7:{app.port}",
                                                        "Origin": f"http://203.0.113.9:{app.port}"})[0] == 403
        assert read_labels(pool) == {}
    finally:
        app.stop()


def test_malformed_and_deeply_nested_bodies_are_a_400(running, pool, capsys):
    json_ct = {"Content-Type": "application/json"}
    for body in [b"[" * 2000 + b"]" * 2000,                     # within the size limit: json's recursion gives up
                 b"[" * 100_000 + b"]" * 100_000,               # over it
                 b'{"id": ' + b"[" * 2000 + b"]" * 2000 + b', "label": "not"}',
                 b"{not json", b"\xff\xfe{}", b'"just a string"', b"null", json.dumps({"id": [B0], "label": "not"}).encode(),
                 json.dumps({"id": {"a": 1}, "label": ["not"]}).encode()]:
        status, reply = running.request("POST", "/api/label", body, json_ct)
        assert status == 400 and reply.count(b"\n") == 1 and len(reply) < 300, (body[:40], status, reply)
    for length in ["abc", "-5", "0", "99999999999999999999"]:
        status, reply = running.request("POST", "/api/label", b"", json_ct | {"Content-Length": length})
        assert status == 400 and reply.count(b"\n") == 1, (length, reply)
    assert not (pool / "labels.csv").exists()
    assert running.request("GET", "/api/state")[0] == 200  # still serving
    assert "Traceback" not in capsys.readouterr().err


def test_backlog_holds_100_connections_arriving_at_once(pool):
    server = make_server(pool, port=0)
    port, n = server.server_address[1], 100
    ready, go = threading.Barrier(n + 1, timeout=10), threading.Event()
    answers, errors = [], []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        try:
            try:
                conn.connect()  # a full backlog drops the SYN: the connection would wait 1 s for a retry
            finally:
                ready.wait()
            conn.sock.settimeout(5)
            go.wait(5)
            conn.request("GET", "/api/state")
            r = conn.getresponse()
            answers.append((r.status, len(json.loads(r.read())["items"])))
        except Exception as e:
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    serving = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    try:
        # The accept loop starts only once all have connected, as when it is busy: the backlog alone holds them.
        ready.wait()
        serving.start()
        go.set()
        for t in threads:
            t.join(10)
    finally:
        if serving.is_alive():  # shutdown() would wait for ever on a loop that never started
            server.shutdown()
        server.server_close()
    assert not errors and answers == [(200, 12)] * n, (len(errors), errors[:3])


def test_a_file_swapped_for_a_symlink_out_of_the_pool_is_not_served(running, pool, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"SECRET bytes outside the pool")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / f"{R0}.png").write_bytes(b"SECRET folder outside the pool")
    image = pool / f"images/dog/{D1}.png"
    assert running.request("GET", running.src(D1))[0] == 200  # the server has seen it as a plain file
    image.unlink()
    image.symlink_to(secret)
    (pool / "images/rail").rename(pool / "rail-moved")
    (pool / "images/rail").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (pool / f"images/dog/{D2}.png").unlink()
    (pool / f"images/dog/{D2}.png").symlink_to(Path("..") / "baby" / f"{B0}.png")  # a link within the pool is fine
    for path in [running.src(D1), running.src(R0)]:
        status, body = running.request("GET", path)
        assert status in (403, 404) and b"SECRET" not in body, (path, status, body)
    assert running.request("GET", running.src(D2)) == (200, (pool / f"images/baby/{B0}.png").read_bytes())
    assert running.request("GET", running.src(D0))[0] == 200


def test_malformed_label_lines_are_skipped_and_reported_with_their_line_number(pool):
    good = [f"{B0},informative,2024-01-01T00:00:00+00:00", f"{B1},not,2024-01-01T00:00:01+00:00"]
    (pool / "labels.csv").write_text("\n".join(["id,label,time", good[0], f"{B2},informative", f"{B3},maybe,2024-01-01T00:00:02+00:00",
                                                "", f'"{D0},not,2024', good[1], f"{D1},not,2024-01-0"]))  # the last one torn
    problems = []
    assert read_labels(pool, problems) == {B0: "informative", B1: "not"}
    assert [p.split("labels.csv ")[1] for p in problems] == [
        "line 3: malformed (2 fields, expected 3: id,label,time), skipped",
        "line 4: malformed (unknown label 'maybe'), skipped",
        "line 6: malformed (1 fields, expected 3: id,label,time), skipped"]
    with pytest.raises(ValueError, match="labels.csv line 3: malformed"):  # other readers: as strict as before
        read_labels(pool)

    p = serve_in_child(pool)
    try:
        lines = [p.stdout.readline() for _ in range(4)]
        assert [line.split("labels.csv ")[1].split(":")[0] for line in lines[:3]] == ["line 3", "line 4", "line 6"]
        assert all("skipped" in line for line in lines[:3]) and "http://127.0.0.1:" in lines[3]
        port = int(lines[3].split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/api/state")
        state = json.loads(conn.getresponse().read())
        assert [i["label"] for i in state["items"][:3]] == ["informative", "not", None]  # B0, B1, B2: shown first
        assert sum(1 for i in state["items"] if i["label"]) == 2
    finally:
        p.kill()
        p.communicate(timeout=10)


# ---- the page in headless Chromium -------------------------------------------------------------

@pytest.fixture(scope="module")
def driver(chromium):  # tests/conftest.py: Debian's chromium through Selenium
    return chromium


class Page:
    def __init__(self, driver):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.By, self.Keys, self.chain = driver, By, Keys, lambda: ActionChains(driver)
        # A short poll: the page moves on once the server has answered, a few ms after the key.
        self.wait = lambda what, cond: WebDriverWait(driver, 5, poll_frequency=0.02).until(lambda _: cond(), message=what)

    def open(self, app: Running):
        self.opaque, self.real = app.server.opaque, app.server.real  # the page knows pictures by opaque ids only
        self.d.get(app.url)
        self.wait("page loaded", lambda: self.d.execute_script("return document.body.dataset.ready") == "1")

    def text(self, css: str) -> str:
        return self.d.find_element(self.By.CSS_SELECTOR, css).text

    def at(self, id: str, position: str | None = None):
        self.wait(f"at {id} (is at {self.real.get(self.text('#id'))})", lambda: self.text("#id") == self.opaque[id])
        assert self.text("#class") == id.split("_")[0]
        assert self.d.find_element(self.By.ID, "image").get_attribute("src").endswith(PICTURE + self.opaque[id])
        if position:
            assert self.text("#position") == position

    def key(self, *keys):
        for k in keys:
            self.chain().send_keys({"left": self.Keys.ARROW_LEFT, "right": self.Keys.ARROW_RIGHT}.get(k, k)).perform()

    def click(self, id: str):
        self.d.find_element(self.By.ID, id).click()

    def choose(self, cls: str):
        from selenium.webdriver.support.ui import Select

        Select(self.d.find_element(self.By.ID, "filter")).select_by_value(cls)

    def settled(self):
        self.wait("labels saved", lambda: self.d.execute_script("return document.body.dataset.pending") in (None, "0"))

    def table(self) -> dict[str, list[str]]:
        rows = self.d.find_elements(self.By.CSS_SELECTOR, "#progress tbody tr")
        return {r.get_attribute("data-class"): [td.text for td in r.find_elements(self.By.TAG_NAME, "td")[1:]] for r in rows}


def test_page_labels_by_click_and_key_resumes_and_survives_restart(driver, pool, tmp_path):
    page = Page(driver)
    app = Running(pool)
    try:
        page.open(app)
        page.at(B0, "1 / 12")
        assert driver.execute_script("return document.querySelector('#image').naturalWidth") == 96  # really loaded
        assert page.text("#current") == "unlabelled" and not driver.find_element(page.By.ID, "done").is_displayed()
        page.click("informative")
        page.at(B1, "2 / 12")
        page.key("n")
        page.at(B2)
        page.key("right")                    # skip B2 without labelling
        page.at(B3, "4 / 12")
        page.key("i")
        page.at(D0, "5 / 12")                # the next unlabelled after B3
        page.key("left", "left")
        page.at(B2, "3 / 12")
        page.click("not")
        page.at(D0)                          # B3 is labelled already, so on to D0
        page.key("left", "left", "left")
        page.at(B1)
        assert page.text("#current") == "labelled not"
        page.key("i")                        # relabel: one more line, the last one wins
        page.at(D0)
        page.choose("rail")
        page.at(R0, "1 / 4")
        assert len(driver.find_elements(page.By.CSS_SELECTOR, "#strip img")) == 4
        page.key("n")
        page.at(R1, "2 / 4")
        page.settled()

        assert label_lines(pool) == [(B0, "informative"), (B1, "not"), (B3, "informative"), (B2, "not"),
                                     (B1, "informative"), (R0, "not")]
        expected = {"baby": ["3", "1", "0", "3 + 1 of 5 + 5"], "dog": ["0", "0", "4", "0 + 0 of 5 + 5"],
                    "rail": ["0", "1", "3", "0 + 1 of 5 + 5"]}
        assert page.table() == expected

        driver.refresh()                     # the class filter is kept in the address
        page.wait("reloaded", lambda: driver.execute_script("return document.body.dataset.ready") == "1")
        page.at(R1, "2 / 4")
        page.open(app)                   # all classes: resume at the first unlabelled image
        page.at(D0, "5 / 12")
        assert page.table() == expected

        (pool / "labels.csv").rename(pool / "labels.kept")
        (pool / "labels.csv").mkdir()        # the server cannot save: it answers 500
        page.key("i", "n")                   # the second was meant for the next image: dropped
        page.wait("error shown", lambda: "NOT saved: label not saved" in page.text("#error"))
        page.settled()
        page.at(D0, "5 / 12")                # the page stays on the image whose label was not saved
        assert page.text("#current") == "unlabelled" and page.table() == expected
        (pool / "labels.csv").rmdir()
        (pool / "labels.kept").rename(pool / "labels.csv")
        shot = tmp_path / "labelling.png"
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] >= 800
    finally:
        app.stop()

    page.key("i")                            # the server is gone: the page must say the label was not saved
    page.wait("error shown", lambda: "NOT saved: no answer" in page.text("#error"))
    page.settled()
    page.at(D0, "5 / 12")                    # and stay on the image
    assert page.text("#current") == "unlabelled"
    assert read_labels(pool) == {B0: "informative", B1: "informative", B2: "not", B3: "informative", R0: "not"}

    app = Running(pool)                      # a fresh server on another port, same pool
    try:
        page.open(app)
        page.at(D0, "5 / 12")
        assert page.table() == expected
        page.choose("dog")
        page.at(D0, "1 / 4")
        page.click("informative")
        page.key("n", "i")
        page.at(D3)
        assert not driver.find_element(page.By.ID, "done").is_displayed()
        page.key("n")
        page.wait("done message", lambda: driver.find_element(page.By.ID, "done").is_displayed())
        assert page.text("#done").startswith("All 4 dog images are labelled")
        page.settled()
        assert page.table()["dog"] == ["2", "2", "0", "2 + 2 of 5 + 5"]
        assert label_lines(pool)[6:] == [(D0, "informative"), (D1, "not"), (D2, "informative"), (D3, "not")]
    finally:
        app.stop()
