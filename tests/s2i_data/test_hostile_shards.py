"""Archive bombs: a shard is read with bounded memory whatever its tar headers claim. A member
bigger than the build's contract allows, a sparse member, a header claiming gigabytes, a
compressed stream under a .tar name, a link: each is one line naming the shard (and the key when
the tar names one), `verify` exits 1, and its peak memory does not grow with the claim."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from s2i_data.readers import Contract, SampleError, ShardError, decode_sample, iter_raw
from shardcraft import copy_build, members

GIB = 1 << 30
SHARD = "train/train-000000.tar"


# ---- tars made byte by byte: what tarfile will not write for us

def _octal(n: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, n)


def _checksummed(buf: bytearray) -> bytes:
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def header(name: str, size: int, fmt: int = tarfile.GNU_FORMAT, kind: bytes = tarfile.REGTYPE,
           linkname: str = "") -> bytes:
    """A member's header as tarfile writes it (a size past 8 GiB in base-256 with GNU_FORMAT, in a
    pax record with PAX_FORMAT), with no data after it."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, linkname
    return info.tobuf(format=fmt)


def gnu_sparse_header(name: str, realsize: int) -> bytes:
    """An old-GNU sparse member ('S'): one 512-byte block stored, at the end of a file of
    ``realsize`` bytes whose rest is a hole; tarfile hands out the hole as zeros."""
    buf = bytearray(512)
    buf[0:len(name)] = name.encode()
    buf[100:108], buf[108:116], buf[116:124] = _octal(0o644, 8), _octal(0, 8), _octal(0, 8)
    buf[124:136], buf[136:148] = _octal(512, 12), _octal(0, 12)
    buf[156:157] = tarfile.GNUTYPE_SPARSE
    buf[257:265] = tarfile.GNU_MAGIC
    buf[386:398], buf[398:410] = _octal(realsize - 512, 12), _octal(512, 12)  # offset, bytes stored
    buf[483:495] = _octal(realsize, 12)
    return _checksummed(buf)


def pax_sparse_header(name: str, realsize: int) -> bytes:
    """A pax 0.0 sparse member: the map in the pax records, one 512-byte block at the end."""
    info = tarfile.TarInfo(name)
    info.size = 512
    info.pax_headers = {"GNU.sparse.size": str(realsize), "GNU.sparse.numblocks": "1",
                        "GNU.sparse.offset": str(realsize - 512), "GNU.sparse.numbytes": "512"}
    return info.tobuf(format=tarfile.PAX_FORMAT)


def tar_bytes(items: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _without_end(tar: bytes) -> bytes:
    """A tar's members without its end-of-archive blocks and padding, to append more to."""
    end = len(tar)
    while end >= 512 and not any(tar[end - 512:end]):
        end -= 512
    return tar[:end]


def planted(shard: Path, bomb) -> str:
    """``shard`` rewritten as its first sample, then ``bomb(key)`` (bytes naming the second
    sample's key) and nothing more; returns that key. A few KB whatever the bomb claims."""
    items = members(shard)
    keys = list(dict.fromkeys(n.split(".", 1)[0] for n, _ in items))
    first = [(n, d) for n, d in items if n.startswith(keys[0] + ".")]
    shard.write_bytes(_without_end(tar_bytes(first)) + bomb(keys[1]))
    return keys[1]


# ---- the reader itself: each bomb one ShardError naming shard and key

def read_all(path: Path) -> list[dict]:
    return list(iter_raw([str(path)], names={str(path): SHARD}))


def refusals(path: Path) -> list[str]:
    """What a reader of the shard is told: each spoilt sample's error, then the shard's."""
    said = []
    try:
        for raw in iter_raw([str(path)], names={str(path): SHARD}):
            if "__error__" in raw:
                said.append(raw["__error__"])
    except ShardError as e:
        said.append(str(e))
    return said


ONE = [("k0.mel.npy", b"\x93NUMPY" + b"x" * 100), ("k0.json", b"{}")]


@pytest.mark.parametrize("bomb, why", [
    (header("k1.mel.npy", 8 * GIB), "8589934592 bytes, more than the"),
    (header("k1.png", 8 * GIB, tarfile.PAX_FORMAT), "8589934592 bytes, more than the"),
    (gnu_sparse_header("k1.png", GIB) + b"\0" * 512, "a sparse member"),
    (pax_sparse_header("k1.png", GIB) + b"\0" * 512, "a sparse member"),
], ids=["gnu-8GiB", "pax-8GiB", "gnu-sparse-1GiB", "pax-sparse-1GiB"])
def test_a_bomb_member_is_one_shard_error_naming_shard_and_key(tmp_path, bomb, why):
    import tracemalloc

    path = tmp_path / "bomb.tar"
    path.write_bytes(_without_end(tar_bytes(ONE)) + bomb + b"x" * 4096)
    tracemalloc.start()
    try:
        said = refusals(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(said) == 1 and said[0].startswith(f"{SHARD}: ") and "k1." in said[0] and why in said[0], said
    assert peak < 64 << 20, f"reading a {len(bomb) + 4096}-byte bomb took {peak >> 20} MiB"


def test_a_compressed_stream_under_a_tar_name_is_refused_by_its_magic(tmp_path):
    path = tmp_path / "gz.tar"
    path.write_bytes(gzip.compress(tar_bytes(ONE)))
    with pytest.raises(ShardError, match=rf"^{SHARD}: unreadable shard \(a gzip-compressed stream"):
        read_all(path)


def test_a_member_over_its_bound_spoils_its_sample_only(tmp_path):
    """Its data present: the reader steps over it (keeping none of it) and reads on."""
    contract = Contract(frames=100)
    big = b"{" + b" " * (contract.member_bytes("json") + 10) + b"}"
    path = tmp_path / "big.tar"
    path.write_bytes(tar_bytes([*ONE, ("k1.mel.npy", b"x"), ("k1.json", big), ("k2.json", b"{}")]))
    raws = list(iter_raw([str(path)], names={str(path): SHARD}, contract=contract))
    assert [r["__key__"] for r in raws] == ["k0", "k1", "k2"]
    assert "json" not in raws[1]
    with pytest.raises(SampleError, match=rf"^{SHARD}: k1\.json: {len(big)} bytes, more than the 65536"):
        decode_sample(raws[1])


@pytest.mark.parametrize("kind, what", [(tarfile.SYMTYPE, "a symbolic link"), (tarfile.LNKTYPE, "a hard link"),
                                        (tarfile.CHRTYPE, "a device"), (tarfile.FIFOTYPE, "a FIFO")])
def test_links_and_devices_are_refused_naming_their_sample(tmp_path, kind, what):
    path = tmp_path / "link.tar"
    path.write_bytes(_without_end(tar_bytes(ONE)) + header("k1.png", 0, kind=kind, linkname="/etc/passwd")
                     + tar_bytes([("k1.json", b"{}")]))
    assert refusals(path) == [f"{SHARD}: k1.png: {what}, not a regular file"]


@pytest.mark.parametrize("ext", ["__error__", "__url__", "__key__", "__shard__"])
def test_members_named_like_a_readers_own_fields_are_refused(tmp_path, ext):
    """webdataset lets ``KEY.__url__`` overwrite the sample's URL; here it spoils its sample."""
    path = tmp_path / "meta.tar"
    path.write_bytes(tar_bytes([*ONE, (f"k1.{ext}", b"planted"), ("k1.json", b"{}")]))
    raws = read_all(path)
    assert [r["__key__"] for r in raws] == ["k0", "k1"] and raws[1]["__url__"] == str(path)
    assert raws[1]["__shard__"] == SHARD and raws[1]["__error__"].startswith(f"{SHARD}: k1.{ext}: an extension")


@pytest.mark.parametrize("name, shown", [
    ("../k1.png", "'..'"), ("/abs/k1.png", "''"), ("k\n1.png", r"\n"), ("k1", "not KEY.EXTENSION"),
    ("k\u202e1.png", r"\u202e"),
])
def test_member_names_that_are_not_plain_are_one_escaped_line(tmp_path, name, shown):
    path = tmp_path / "names.tar"
    path.write_bytes(tar_bytes([*ONE, (name, b"x")]))
    with pytest.raises(ShardError) as e:
        read_all(path)
    assert str(e.value).startswith(f"{SHARD}: unreadable shard (") and shown in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and "\u202e" not in str(e.value)


@pytest.mark.parametrize("tail, why", [
    (b"", "no end-of-archive blocks"),
    (b"\0" * 512, "one zero block"),
    (b"garbage " * 64, "not a tar header at byte"),
], ids=["cut-at-a-member", "one-zero-block", "garbage-after-members"])
def test_a_tar_must_end_as_a_tar_ends(tmp_path, tail, why):
    """tarfile reads all three as a shorter, valid archive; whatever the URL (a pipe too)."""
    path = tmp_path / "cut.tar"
    path.write_bytes(_without_end(tar_bytes(ONE)) + tail)
    for url in (str(path), f"pipe:cat {path}"):
        with pytest.raises(ShardError, match=why):
            list(iter_raw([url], names={url: SHARD}))


def test_a_fifo_named_like_a_shard_is_refused_not_waited_on(tmp_path):
    """Without a writer, opening it would wait for ever; with one, its stream never ends. Here
    the test holds it open and has put a whole tar in it (so that even a reader that opens it
    cannot hang the test): it is refused for what it is, before it is read."""
    path = tmp_path / "train-000000.tar"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, tar_bytes(ONE) + b"\0" * 10240)
        with pytest.raises(ShardError, match="not a regular file"):
            read_all(path)
    finally:
        os.close(fd)


# ---- verify on a build holding the bombs: one FAIL line each, bounded memory

@pytest.fixture(scope="module")
def bombed(tiny_build, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the tiny build with one bomb per train shard, each a few KB on disk: what a
    reader of each should be told (the key the bomb sits in, or the compression)."""
    out = copy_build(tiny_build, tmp_path_factory.mktemp("bombed") / "shards")
    train = sorted((out / "train").glob("*.tar"))
    said = {
        "train/train-000000.tar": planted(train[0], lambda key: header(f"{key}.mel.npy", 8 * GIB) + b"\0" * 4096),
        "train/train-000001.tar": planted(train[1], lambda key: pax_sparse_header(f"{key}.png", GIB) + b"\0" * 512),
        "train/train-000002.tar": planted(train[2], lambda key: gnu_sparse_header(f"{key}.png", GIB) + b"\0" * 512),
        "train/train-000003.tar": "gzip-compressed",
    }
    train[3].write_bytes(gzip.compress(train[3].read_bytes()))
    return out, said


# The CLI run with an exit hook that writes its own high-water resident memory (VmHWM): the
# kernel starts that count anew at exec, whereas ru_maxrss from wait4 keeps the spawning process's
# peak (a pytest that has loaded torch: ~800 MB) across the fork and exec.
MEASURED = """
import atexit, sys
PEAK_FILE = sys.argv[1]
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(PEAK_FILE, "w") as out:
        out.write(str(kb * 1024))
atexit.register(_peak)
import s2i_data.cli
sys.argv = ["s2i-data", *sys.argv[2:]]
s2i_data.cli.main()
"""


def run_measured(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI as a subprocess, with its own peak resident memory in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = os.path.join(tmp, "peak")
        r = subprocess.run([sys.executable, "-c", MEASURED, peak_file, *args], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=600)
        with open(peak_file) as f:
            return r, int(f.read())


def test_verify_names_each_bomb_in_one_line_at_bounded_memory(bombed):
    out, said = bombed
    r, peak = run_measured("verify", str(out), "--content-samples", "0")
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    fails = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    for shard, key in said.items():
        mine = [f for f in fails if f.startswith(f"FAIL {shard}: unreadable shard (")]
        assert len(mine) == 1 and key in mine[0], (shard, key, fails)
    assert peak < 500 << 20, f"verify of a few-KB bomb peaked at {peak >> 20} MiB"
