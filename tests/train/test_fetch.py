"""``data fetch`` against a local HTTP server on 127.0.0.1: resume, checksum, unpack, layout."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from train.cli import main
from train.errors import FetchError
from train.fetch import download, fetch, unpack
from train.synthetic import make_synthetic_hyperkvasir


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_next: set[str] = set()  # paths whose next response stops halfway
    ranges_seen: list[str] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            self.ranges_seen.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        data = body[start:]
        if self.path in self.cut_next:
            self.cut_next.discard(self.path)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_next, _Handler.ranges_seen = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _zip_of(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, prefix + str(p.relative_to(folder)))
    return buf.getvalue()


@pytest.fixture
def hk_archive(tmp_path):
    src = tmp_path / "src"
    make_synthetic_hyperkvasir(src, per_class=2, size=32, classes=("polyp", "hemorroids", "normal-z-line"))
    (src / "split.csv").rename(tmp_path / "split.csv")
    return _zip_of(src), (tmp_path / "split.csv").read_bytes()


def test_fetch_resumes_checks_and_unpacks_hyperkvasir(server, hk_archive, tmp_path, capsys):
    base, handler = server
    archive, split = hk_archive
    handler.files = {"/hk.zip": archive, "/split.csv": split}
    handler.cut_next = {"/hk.zip"}
    target = tmp_path / "out"
    sha = hashlib.sha256(archive).hexdigest()
    args = ["data", "fetch", "hyperkvasir", str(target), "--url", f"{base}/hk.zip", "--sha256", sha,
            "--split-url", f"{base}/split.csv", "--no-progress"]
    assert main(args) == 1  # the connection dropped halfway
    err = capsys.readouterr().err
    assert "run the command again to resume" in err
    part = target / "hk.zip.part"
    assert 0 < part.stat().st_size < len(archive)
    assert main(args) == 0  # resumes with a Range request
    assert handler.ranges_seen == [f"bytes={len(archive) // 2}-"]
    out = capsys.readouterr().out
    assert "6 labeled images in 3 classes" in out and sha in out
    assert (target / "hk.zip.sha256").read_text().split()[0] == sha
    assert (target / "labeled-images" / "lower-gi-tract" / "pathological-findings" / "hemorrhoids").is_dir()
    assert (target / "2_fold_split.csv").read_bytes() == split
    assert main(args) == 0 and "already fetched" in capsys.readouterr().out
    assert main(["data", "counts", "--data", str(target / "labeled-images"), "--split-csv",
                 str(target / "2_fold_split.csv")]) == 0
    assert "hemorroids" in capsys.readouterr().out


def test_checksum_mismatch_deletes_the_download(server, hk_archive, tmp_path):
    base, handler = server
    handler.files = {"/hk.zip": hk_archive[0]}
    with pytest.raises(FetchError, match="checksum mismatch .* the download was deleted"):
        download(f"{base}/hk.zip", tmp_path / "hk.zip", sha256="0" * 64, progress=False)
    assert not (tmp_path / "hk.zip").exists() and not (tmp_path / "hk.zip.part").exists()


def test_http_error_and_unreachable(server, tmp_path):
    base, _ = server
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{base}/missing.zip", tmp_path / "m.zip", progress=False)
    with pytest.raises(FetchError, match="cannot download"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", progress=False, timeout=2)


def test_kvasir_seg_layout(server, tmp_path):
    base, handler = server
    src = tmp_path / "src" / "Kvasir-SEG"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for n in ("a.jpg", "b.jpg"):
        (src / "images" / n).write_bytes(b"i")
        (src / "masks" / n).write_bytes(b"m")
    handler.files = {"/kvasir-seg.zip": _zip_of(tmp_path / "src")}
    info = fetch("kvasir-seg", tmp_path / "out", url=f"{base}/kvasir-seg.zip", progress=False)
    assert info["contents"] == "2 images with masks" and not info["verified"]
    assert Path(info["data"]) == tmp_path / "out" / "Kvasir-SEG"


def test_unpack_refuses_members_leaving_the_folder(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(FetchError, match="would leave the target folder"):
        unpack(bad, tmp_path / "t")
    assert not (tmp_path / "evil.txt").exists()
