"""Every kind of the bad-input corpus through every command it applies to, each in a subprocess
with a timeout: it ends with a correct output, or a non-zero exit and one line naming the problem;
never a traceback, a hang, or a partial file under the final name.

The runs are independent processes, so they are started together (a few at a time) by one
module fixture; each parametrised test then checks its own run.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_corpus  # noqa: E402
from make_corpus import FSIZE_LIMIT, KINDS  # noqa: E402

TIMEOUT_S = 90
ERROR_LINE = re.compile(r"^(endoview: error:|ERROR )")
# The whole matrix is ~85 processes; by default the window (the slowest to start) and eval (torch)
# run on a representative subset. ENDOVIEW_FULL_CORPUS=1 runs every kind through every command.
FULL = os.environ.get("ENDOVIEW_FULL_CORPUS") == "1"
VIEW_SUBSET = {"zero_byte", "truncated_mp4", "text_as_mp4", "video_1x1", "video_8k", "size_change",
               "non_ascii_path", "image_1x1", "image_16bit", "image_truncated"}
EVAL_SUBSET = {"model_truncated", "model_tampered", "manifest_disagrees", "path_escape"}
CASES = [(k.name, cmd) for k in KINDS for cmd in k.commands
         if FULL or (cmd != "view" or k.name in VIEW_SUBSET) and (cmd != "eval" or k.name in EVAL_SUBSET)] + [
    ("good_bundle", "annotate"), ("good_bundle", "eval")]


@dataclass
class Run:
    argv: list[str]
    output: Path | None
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    before: bytes | None = None  # an output that existed before the run


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


def _run(argv: list[str], output: Path | None, *, fsize: bool = False, cwd: Path | None = None) -> Run:
    before = (output.read_bytes() if output.is_file() else b"<folder>" if output.is_dir() else None) \
        if output is not None else None
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONIOENCODING": "utf-8"}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "engine.cli", *argv], capture_output=True, text=True,
                           timeout=TIMEOUT_S, env=env, cwd=cwd,
                           preexec_fn=_limit_file_size if fsize else None)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = None, str(exc.stdout or ""), str(exc.stderr or "")
    return Run(argv, output, rc, out, err, time.monotonic() - t0, before)


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    pytest.importorskip("torch", reason="endoview eval needs torch")
    from train.synthetic import make_synthetic_hyperkvasir

    return make_synthetic_hyperkvasir(tmp_path_factory.mktemp("hk"), per_class=2, size=32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bundle, request) -> dict[tuple[str, str], Run]:
    """Build the corpus and run every case (three processes at a time)."""
    root = tmp_path_factory.mktemp("corpus")
    readonly = None
    if os.geteuid() == 0:  # root writes anywhere: a read-only tmpfs is the unwritable folder
        readonly = root / "ro_mount"
        readonly.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(readonly)],
                          capture_output=True).returncode != 0:
            readonly = None
        else:
            request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(readonly)], capture_output=True))
    data = None
    if any(cmd == "eval" for _, cmd in CASES):
        try:
            data = request.getfixturevalue("synthetic_data")
        except pytest.skip.Exception:
            data = None
    paths = {k.name: make_corpus.make(k.name, root / k.name) for k in KINDS}
    paths["good_bundle"] = make_corpus.make_good_bundle(root / "good_bundle")
    if readonly is not None:
        paths["output_readonly"] = readonly / "out.mp4"

    jobs = {}
    for name, cmd in CASES:
        kind = make_corpus.BY_NAME.get(name)
        role = kind.role if kind else "model"
        work = root / "runs" / f"{name}-{cmd}"
        work.mkdir(parents=True)
        target = paths[name]
        out = work / "out.mp4"
        model = ["--model", str(tiny_bundle.path)]
        fsize = False
        if role == "output":
            out = target
            argv = ["annotate", "demo:640x512@30", "-o", str(out), "--end", "3", *model]
            fsize = name == "output_disk_full"
        elif role == "model":
            if cmd == "annotate":
                argv = ["annotate", "demo:160x128@10", "-o", str(out), "--end", "0.5", "--model", str(target)]
            elif cmd == "eval":
                if data is None:
                    continue
                out = work / "eval" / "metrics.json"
                argv = ["eval", str(target), "--data", str(data[0]), "--split-csv", str(data[1]), "--fold", "0",
                        "--out", str(out.parent), "--workers", "0", "--batch-size", "8"]
            else:
                out = None
                argv = ["build-engine", str(target)]
        elif cmd == "annotate":
            argv = ["annotate", str(target), "-o", str(out), *model]
        elif cmd == "crop":
            out = None
            argv = ["crop", str(target), "--json", "--preview", str(work / "previews")]
        else:  # view
            out = None
            argv = ["view", str(target), "--exit-after-frames", "3", "--settings", str(work / "s.ini"),
                    "--backend", "onnxruntime", *model]
        jobs[(name, cmd)] = (argv, out, fsize, work)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(_run, a, o, fsize=f, cwd=w) for key, (a, o, f, w) in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def _frames(path: Path) -> int:
    from engine.sources import open_source

    with open_source(path) as src:
        return sum(1 for _ in src)


def _check_ok(name: str, cmd: str, run: Run, source: Path | None) -> None:
    assert run.rc == 0, f"{name} {cmd} should succeed:\n{run.stderr}"
    assert not [x for x in run.stderr.splitlines() if ERROR_LINE.match(x)], run.stderr
    if cmd == "annotate":
        assert _frames(run.output) >= 1
        if source is not None and source.is_file():
            assert _frames(run.output) == _frames(source)
    elif cmd == "crop":
        results = json.loads(run.stdout)["results"]
        assert results and all(len(r["bbox"]) == 4 for r in results)
    elif cmd == "eval":
        assert json.loads(run.output.read_text())


def _check_failed(name: str, cmd: str, run: Run, fragment: str) -> None:
    assert run.rc not in (0, None), f"{name} {cmd} should fail (rc {run.rc}):\n{run.stdout}\n{run.stderr}"
    errors = [x for x in run.stderr.splitlines() if ERROR_LINE.match(x)]
    assert len(errors) == 1, f"{name} {cmd}: expected one error line, got:\n{run.stderr}"
    assert fragment.lower() in errors[0].lower(), f"{name} {cmd}: {fragment!r} not in {errors[0]!r}"
    assert "internal error" not in errors[0], errors[0]
    if run.output is not None and run.before is None:
        assert not run.output.exists(), f"{name} {cmd}: {run.output} left behind after a failure"


@pytest.mark.timeout(1200)  # the first test waits for the module fixture, which runs every case
@pytest.mark.parametrize("name, cmd", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_bad_input(runs, name, cmd):
    if (name, cmd) not in runs:
        pytest.skip("endoview eval needs torch")
    run = runs[(name, cmd)]
    kind = make_corpus.BY_NAME.get(name)
    expect = kind.expect if kind else "ok"
    assert run.rc is not None, f"{name} {cmd} hung (killed after {TIMEOUT_S} s): {run.argv}"
    assert "Traceback" not in run.stderr, run.stderr
    if run.output is not None:  # nothing half-written under a final or temporary name
        leftovers = [p.name for p in run.output.parent.glob("*partial*")] if run.output.parent.is_dir() else []
        assert not leftovers, leftovers
        if run.before is not None:
            kept = b"<folder>" if run.output.is_dir() else run.output.read_bytes()
            assert kept == run.before, "an existing output was changed"
    source = None
    if kind is not None and kind.role == "input":
        source = Path(run.argv[1])
    if expect == "ok":
        _check_ok(name, cmd, run, source)
    elif expect == "partial":
        if run.rc == 0 or run.rc == 3:
            if cmd == "annotate":
                assert _frames(run.output) >= 1
            if run.rc == 3:
                assert [x for x in run.stderr.splitlines() if x.startswith("warning:")], run.stderr
        else:
            errors = [x for x in run.stderr.splitlines() if ERROR_LINE.match(x)]
            assert len(errors) == 1 and "internal error" not in errors[0], run.stderr
            if run.output is not None:
                assert not run.output.exists()
    else:
        _check_failed(name, cmd, run, expect)


def test_corpus_script_has_help_and_enough_kinds(tmp_path):
    r = subprocess.run([sys.executable, str(Path(make_corpus.__file__)), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "OUT_DIR" in r.stdout
    assert len(KINDS) >= 20
    r = subprocess.run([sys.executable, str(Path(make_corpus.__file__)), str(tmp_path), "--only",
                        "zero_byte", "video_8k"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    eight_k = tmp_path / "video_8k" / "eight_k.mp4"
    assert eight_k.stat().st_size < 200_000  # 8K but small in bytes
