"""A labelling pool from somebody else: pool.csv, pool.json and labels.csv are checked when read,
the server sends only the pictures `sample` makes (by content) with nosniff on every answer and a
Content-Security-Policy on its page, and no write goes through a link left in the pool."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from s2i_data.untrusted import Untrusted
from s2i_model.labelling.store import append_label, append_pool_rows, pool_meta, read_labels, read_pool

from test_labelling import B0, D1, D2, Page, Running, make_pool

REPO = Path(__file__).resolve().parents[3]


def s2i_model(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # a time-out: `label` on a pool it does not refuse would serve until stopped
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def one_line(res: subprocess.CompletedProcess) -> str:
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0 and len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert "internal error" not in out, out
    return out


@pytest.fixture
def pool(tmp_path) -> Path:
    return make_pool(tmp_path / "pool")


def get(app: Running, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


# ---- the server's answers --------------------------------------------------------------------

def test_every_answer_says_nosniff_and_the_page_has_a_policy_without_unsafe_inline(pool):
    from s2i_model.labelling.server import security_headers  # the helper the live page shares

    app = Running(pool)
    try:
        answers = {"page": get(app, "/"), "state": get(app, "/api/state"), "image": get(app, app.src(D1)),
                   "missing": get(app, "/pool.csv"), "favicon": get(app, "/favicon.ico"),
                   "wrong host": get(app, "/", headers={"Host": "evil.example"}),
                   "bad post": get(app, "/api/label", "POST", b"{}", {"Content-Type": "text/plain"}),
                   "unknown method": get(app, "/", "PUT")}  # answered by the library itself (501)
    finally:
        app.stop()
    for what, (status, headers, _) in answers.items():
        assert headers.get("X-Content-Type-Options") == "nosniff", (what, status, headers)
    status, headers, page = answers["page"]
    csp = headers["Content-Security-Policy"]
    assert status == 200 and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert "script-src 'sha256-" in csp and "style-src 'sha256-" in csp and "frame-ancestors 'none'" in csp
    assert dict(security_headers(page))["Content-Security-Policy"] == csp  # the shared helper is what is sent
    assert "Content-Security-Policy" not in answers["state"][1]  # JSON is not a page
    assert answers["image"][1]["Content-Type"] == "image/png"


def test_the_page_runs_under_its_policy_and_an_injected_script_does_not(pool, chromium):
    app = Running(pool)
    try:
        page = Page(chromium)
        page.open(app)  # its own inline script ran: it set data-ready
        page.at(B0, "1 / 12")
        # its own inline style applied
        assert chromium.execute_script("return getComputedStyle(document.querySelector('header')).backgroundColor") \
            == "rgb(43, 45, 49)"
        chromium.execute_script("""
            window.blocked = 0;
            document.addEventListener('securitypolicyviolation', () => { window.blocked++; });
            const s = document.createElement('script');
            s.textContent = "document.title = 'pwned'";
            document.body.appendChild(s);""")
        page.wait("violation reported", lambda: chromium.execute_script("return window.blocked") >= 1)
        assert chromium.title == "Informativity labelling"
    finally:
        app.stop()


def test_only_pictures_are_served_by_their_content_not_their_name(pool):
    (pool / f"images/dog/{D1}.png").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    jpeg = io.BytesIO()
    Image.new("RGB", (96, 96), (1, 2, 3)).save(jpeg, format="JPEG")
    (pool / f"images/dog/{D2}.png").write_bytes(jpeg.getvalue())
    app = Running(pool)
    try:
        status, _, body = get(app, app.src(D1))
        assert status == 404 and b"<script>" not in body
        status, headers, body = get(app, app.src(D2))
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == jpeg.getvalue()
    finally:
        app.stop()


# ---- pool files are checked when read ----------------------------------------------------------

def rewrite_pool_csv(pool: Path, row: int, **changes) -> None:
    with open(pool / "pool.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[row].update(changes)
    with open(pool / "pool.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


BAD_ROWS = {
    "file up and out": {"file": "images/dog/../../../secret.png"},
    "absolute file": {"file": "/etc/passwd"},
    "file not under images": {"file": "pool.json"},
    "file a page": {"file": "images/dog/page.html"},
    "file one folder deeper": {"file": "images/dog/x/y.png"},
    "class folder up": {"file": "images/../x.png"},
    "class a path": {"class": "../../x"},
    "id with a newline": {"id": "a\nb"},
    "key with NUL": {"key": "a\0b"},
    "sample not a number": {"sample": "<script>"},
    "duplicate id": {"id": B0},
}


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_a_pool_csv_row_that_is_not_plain_names_is_refused(pool, case):
    rewrite_pool_csv(pool, 1, **BAD_ROWS[case])
    with pytest.raises(Untrusted, match="pool.csv line 3"):
        read_pool(pool)


@pytest.mark.parametrize("meta", [{"classes": ["../x"]}, {"classes": "dog"}, {"target": "5"}, {"target": -1},
                                  {"target": float("inf")}, {"run": "runs\n<script>"}, []])
def test_a_pool_json_that_breaks_its_schema_is_refused(pool, meta):
    (pool / "pool.json").write_text(json.dumps(meta))
    with pytest.raises(Untrusted, match="pool.json"):
        pool_meta(pool)


def test_labels_whose_id_is_not_a_name_are_skipped_as_malformed(pool):
    (pool / "labels.csv").write_text(f"id,label,time\n{B0},not,t\n\"a\x1bb\",informative,t\n")
    problems: list[str] = []
    assert read_labels(pool, problems) == {B0: "not"}
    assert len(problems) == 1 and "line 3" in problems[0] and "\x1b" not in problems[0]


def test_label_refuses_a_hostile_pool_in_one_line(pool):
    rewrite_pool_csv(pool, 0, file="images/../../secret.png")
    out = one_line(s2i_model("label", pool, "--port", 0))
    assert "pool.csv line 2: file" in out


# ---- appends never follow a link ---------------------------------------------------------------

def test_appends_refuse_a_link_left_in_place_of_labels_or_pool(pool, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (pool / "labels.csv").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        append_label(pool, B0, "informative")
    (pool / "pool.csv").rename(pool / "pool.kept")
    (pool / "pool.csv").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        append_pool_rows(pool, [{"id": "x", "file": "images/dog/x.png", "class": "dog", "key": "x", "sample": 0}])
    assert victim.read_text() == "precious\n"


def test_a_torn_line_is_still_cut_before_the_next_label(pool):
    append_label(pool, B0, "informative")
    with open(pool / "labels.csv", "a") as f:
        f.write(f"{D1},not,2024-0")
    append_label(pool, D2, "not")
    assert read_labels(pool) == {B0: "informative", D2: "not"}
