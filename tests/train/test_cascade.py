"""The paper's Cascade Mask R-CNN (train/seg/cascade*.py, engine/backends/mmdet_compat.py): its MMDetection config,
our two transforms, a shrunk training run on real Kvasir-SEG images, resume, weights, export-seg."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet", reason="Cascade Mask R-CNN needs the seg extra (bash scripts/test.sh installs it: "
                    "MMDetection 3.3, mmcv 2.1.0 built from source)")

import torch  # noqa: E402

from engine.bundle import load_bundle  # noqa: E402
from train.cli import main  # noqa: E402
from train.seg import cascade_train  # noqa: E402
from train.seg.cascade_config import SHRINK, CascadeConfig, CocoSplit, build_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PER_FOLD = 2  # images per fold in the tiny COCO folder: batch 1 -> 2 iterations per epoch


def _conv(c_in: int, c_out: int, k: int, bias: bool = False) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


# Cascade Mask R-CNN R50-FPN with one class, counted by hand from the architecture (not from a
# run). Tensors in its state_dict: ResNet-50 = stem conv and BN (a BN holds 5: weight, bias,
# running mean and variance, batches tracked) + 16 bottlenecks of 3 convs and 3 BNs + 4 downsample
# convs with a BN; FPN = 4 lateral and 4 output convs with biases; RPN = a conv, cls and reg with
# biases; each of the 3 cascade stages: a box head of 2 shared FCs, cls and reg, and a mask head of
# 4 convs, a deconv and the logits, all with biases.
CASCADE_TENSORS = (1 + 5) + 16 * (3 + 3 * 5) + 4 * (1 + 5) + 8 * 2 + 3 * 2 + 3 * (4 * 2 + 6 * 2)  # 400


def _cascade_parameters() -> int:
    """Its learnable parameters (BN weight and bias, no running statistics): 77,020,772."""
    n = _conv(3, 64, 7) + 2 * 64  # ResNet-50 stem
    c_in = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for i in range(blocks):  # bottleneck: 1x1, 3x3, 1x1 (x4), each with a BN
            n += _conv(c_in, planes, 1) + _conv(planes, planes, 3) + _conv(planes, 4 * planes, 1) + 2 * 6 * planes
            if i == 0:  # downsample 1x1 conv and BN
                n += _conv(c_in, 4 * planes, 1) + 2 * 4 * planes
            c_in = 4 * planes
    n += sum(_conv(c, 256, 1, True) for c in (256, 512, 1024, 2048)) + 4 * _conv(256, 256, 3, True)  # FPN
    n += _conv(256, 256, 3, True) + _conv(256, 3, 1, True) + _conv(256, 4 * 3, 1, True)  # RPN, 3 anchors
    # box head on 7x7 RoIs: fc 12544 -> 1024 -> 1024, cls (1 class + background), class-agnostic reg
    box = (256 * 7 * 7 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * 2 + (1024 + 1) * 4
    mask = 4 * _conv(256, 256, 3, True) + _conv(256, 256, 2, True) + _conv(256, 1, 1, True)
    return n + 3 * (box + mask)


@pytest.fixture(scope="module")
def coco(data_dir, tmp_path_factory) -> Path:
    """A COCO folder (as 'endoview data kvasir-coco' writes) of the first real images of each fold."""
    from train.seg.coco import build_coco
    from train.seg.data import load_kvasir_seg

    out = tmp_path_factory.mktemp("coco")
    samples = load_kvasir_seg(data_dir / "kvasir-seg")
    for k in (0, 1):
        doc = build_coco([s for s in samples if s.fold == k][:PER_FOLD], image_dir=out / "images")
        (out / "annotations").mkdir(exist_ok=True)
        (out / "annotations" / f"fold{k}.json").write_text(json.dumps(doc), encoding="utf-8")
    return out


def shrunk_args(coco: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "segment", "--arch", "cascade", "--data", str(coco), "--fold", "1", "--out", str(out),
            "--shrink", "--epochs", "1", "--batch-size", "1", "--threads", "2", *extra]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("endoview: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# --------------------------------------------------------------------------------------------
# config and transforms


def test_config_has_the_papers_settings(tmp_path):
    split = CocoSplit(images=tmp_path / "images", train=(tmp_path / "fold0.json",), val=tmp_path / "fold1.json")
    cfg = build_config(CascadeConfig(data=str(tmp_path), out=str(tmp_path / "run"), fold=1), split, tmp_path)
    m = cfg.model
    assert m.type == "CascadeRCNN" and m.backbone.depth == 50 and m.backbone.init_cfg is None
    assert [h.num_classes for h in m.roi_head.bbox_head] == [1, 1, 1] and m.roi_head.mask_head.num_classes == 1
    assert m.test_cfg.rpn.nms.iou_threshold == 0.7
    assert m.test_cfg.rcnn.score_thr == 0.5 and m.test_cfg.rcnn.nms.iou_threshold == 0.3
    assert m.test_cfg.rcnn.mask_thr_binary == 0.45
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 0.004, 0.9, 1e-4)
    warmup, steps = cfg.param_scheduler
    assert warmup.type == "LinearLR" and not warmup.by_epoch and warmup.end == 500
    assert steps.type == "MultiStepLR" and steps.by_epoch and list(steps.milestones) == [10, 18]
    assert steps.gamma == 0.1
    assert cfg.train_cfg.max_epochs == 20 and cfg.train_dataloader.batch_size == 2
    train, test = cfg.train_dataloader.dataset.pipeline, cfg.val_dataloader.dataset.pipeline
    types = [t.type for t in train]
    assert types == ["LoadImageFromFile", "LoadAnnotations", "Resize", "RandomFlip", "RandomFlip",
                     "RandomAffineMasks", "RandomJPEG", "PhotoMetricDistortion", "CutOut", "FilterAnnotations",
                     "PackDetInputs"]
    assert not [t for t in types if "blur" in t.lower()], "blur hurt in the paper"
    assert {t.direction for t in train if t.type == "RandomFlip"} == {"horizontal", "vertical"}
    assert tuple(next(t for t in train if t.type == "RandomJPEG").quality) == (60, 95)
    for pipe in (train, test):
        resize = next(t for t in pipe if t.type == "Resize")
        assert tuple(resize.scale) == (1024, 1024) and resize.keep_ratio
    assert cfg.train_dataloader.dataset.ann_file.endswith("fold0.json")
    assert cfg.val_dataloader.dataset.ann_file.endswith("fold1.json")
    assert cfg.val_evaluator.type == "CocoMetric" and list(cfg.val_evaluator.metric) == ["bbox", "segm"]
    assert cfg.load_from is None and "train.seg.cascade_transforms" in cfg.custom_imports.imports


def test_random_jpeg_changes_pixels_and_keeps_shape(data_dir):
    import cv2

    from train.seg.cascade_transforms import RandomJPEG

    img = cv2.imread(str(sorted((data_dir / "kvasir-seg" / "images").iterdir())[0]))
    out = RandomJPEG(prob=1.0, quality=(60, 60)).transform({"img": img.copy()})["img"]
    assert out.shape == img.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - img.astype(int))
    assert 0.5 < diff.mean() < 10, diff.mean()
    np.testing.assert_array_equal(RandomJPEG(prob=0.0).transform({"img": img.copy()})["img"], img)
    as_float = RandomJPEG(prob=1.0).transform({"img": img.astype(np.float32)})["img"]
    assert as_float.dtype == np.float32 and as_float.shape == img.shape
    from mmdet.registry import TRANSFORMS

    assert isinstance(TRANSFORMS.build(dict(type="RandomJPEG")), RandomJPEG)


def test_random_affine_moves_masks_with_the_image():
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks

    from train.seg.cascade_transforms import RandomAffineMasks

    img = np.zeros((96, 128, 3), np.uint8)
    img[30:60, 40:80] = 255
    mask = np.zeros((1, 96, 128), np.uint8)
    mask[0, 30:60, 40:80] = 1
    np.random.seed(1)
    out = RandomAffineMasks(prob=1.0, max_rotate_degree=20).transform(
        {"img": img, "gt_masks": BitmapMasks(mask, 96, 128), "gt_bboxes": HorizontalBoxes([[40, 30, 80, 60]]),
         "gt_bboxes_labels": np.zeros(1, np.int64), "gt_ignore_flags": np.zeros(1, bool)})
    warped = out["gt_masks"].masks[0].astype(bool)
    assert out["img"].shape == img.shape and not np.array_equal(warped, mask[0].astype(bool))
    bright = out["img"][..., 0] > 127
    assert (warped & bright).sum() / (warped | bright).sum() > 0.9, "the mask must follow the image"
    ys, xs = np.nonzero(warped)
    box = out["gt_bboxes"].tensor.numpy()[0]
    assert abs(box[0] - xs.min()) <= 1 and abs(box[2] - xs.max() - 1) <= 1 and abs(box[1] - ys.min()) <= 1


# --------------------------------------------------------------------------------------------
# errors, launcher, compat


def test_bad_weights_and_missing_data_are_one_line_errors(coco, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(shrunk_args(coco, tmp_path / "a", "--weights", str(bad))) == 1
    line = one_error_line(capsys)
    assert f"--weights {bad} cannot be loaded as a torch checkpoint" in line
    assert not (tmp_path / "a").exists()
    torch.save({"hello": "world"}, tmp_path / "empty.pth")
    assert main(shrunk_args(coco, tmp_path / "b", "--weights", str(tmp_path / "empty.pth"))) == 1
    assert "holds no model weights" in one_error_line(capsys)
    assert main(shrunk_args(coco, tmp_path / "c", "--weights", str(tmp_path / "missing.pth"))) == 1
    assert "does not exist" in one_error_line(capsys)
    assert main(shrunk_args(tmp_path / "nowhere", tmp_path / "d")) == 1
    assert "is not a folder" in one_error_line(capsys)
    assert main(shrunk_args(tmp_path, tmp_path / "e")) == 1
    assert "neither annotations/fold<K>.json" in one_error_line(capsys)
    broken = tmp_path / "broken"
    (broken / "annotations").mkdir(parents=True)
    (broken / "images").mkdir()
    for k in (0, 1):
        (broken / "annotations" / f"fold{k}.json").write_text(
            json.dumps({"images": [{"id": 1, "file_name": "gone.jpg"}], "annotations": []}))
    assert main(shrunk_args(broken, tmp_path / "f")) == 1
    assert "1 image(s) named in" in one_error_line(capsys)
    assert main(shrunk_args(coco, tmp_path / "g", "--width", "16")) == 1
    assert "--width: not for --arch cascade" in one_error_line(capsys)
    assert main(["train", "segment", "--arch", "unet", "--data", str(coco), "--out", str(tmp_path / "u"),
                 "--weights", "x.pth", "--shrink"]) == 1
    assert "--weights, --shrink: only for --arch cascade" in one_error_line(capsys)
    if torch.cuda.device_count() < 2:
        assert main(shrunk_args(coco, tmp_path / "h", "--gpus", "2")) == 1
        assert "--gpus 2: this machine has" in one_error_line(capsys)
        assert not (tmp_path / "h").exists()


def test_gpus_runs_mmdetections_distributed_launcher(tmp_path, monkeypatch):
    seen = []

    def fake_run(cmd, env, check):
        seen.append((cmd, env))
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(cascade_train.subprocess, "run", fake_run)
    with pytest.raises(cascade_train.TrainError, match="distributed training .* failed \\(exit code 3\\)"):
        cascade_train._launch_distributed(tmp_path, 4, resume=True)
    cmd, env = seen[0]
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=4" in cmd
    assert cmd[cmd.index("-m", 3):] == ["-m", "train.seg.cascade", str(tmp_path), "--launcher", "pytorch", "--resume"]
    assert str(ROOT) in env["PYTHONPATH"]


def test_missing_mmdet_is_a_clear_error():
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "mmdet":
                    raise ImportError("No module named 'mmdet' (blocked)")
        sys.meta_path.insert(0, Block())
        from engine.errors import BackendUnavailable
        from engine.backends.mmdet_compat import import_mmdet
        try:
            import_mmdet()
        except BackendUnavailable as err:
            print("ERR", err)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERR Cascade Mask R-CNN needs mmdet")
    assert "run 'EXTRAS=train,seg bash scripts/install.sh' in the endoview checkout" in proc.stdout


def test_compat_allows_runner_checkpoints_but_not_getattr():
    from engine.backends.mmdet_compat import SAFE_GLOBALS, import_mmdet

    assert import_mmdet() == import_mmdet()  # idempotent
    allowed = torch.serialization.get_safe_globals()
    from mmengine.logging import HistoryBuffer

    assert HistoryBuffer in allowed and getattr not in allowed and all(g in allowed for g in SAFE_GLOBALS)
    buf = HistoryBuffer()
    buf.update(1.5)
    import io

    f = io.BytesIO()
    torch.save({"buf": buf}, f)
    f.seek(0)
    back = torch.load(f, weights_only=True)["buf"]
    assert back.mean() == 1.5 and back.statistics("current") == 1.5


# --------------------------------------------------------------------------------------------
# a shrunk run: train, resume, export


@pytest.fixture(scope="module")
def trained(coco, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cascade"
    assert main(shrunk_args(coco, out)) == 0
    return out


@pytest.fixture(scope="module")
def resumed(trained) -> Path:
    assert main(["train", "segment", "--out", str(trained), "--resume", "--epochs", "2"]) == 0
    return trained


@pytest.mark.slow
def test_shrunk_run_trains_from_random_weights(trained):
    info = json.loads((trained / "run.json").read_text())
    assert info["arch"] == "cascade" and info["fold"] == 1 and info["weights"] == "random"
    assert info["iterations"] == PER_FOLD and info["epochs_done"] == 1 and info["seed"] == 0
    assert (trained / "epoch_1.pth").is_file() and (trained / "config.py").is_file()
    assert info["config"]["shrink"] and info["config"]["image_size"] == SHRINK["image_size"]
    logs = list(trained.glob("*/*.log"))
    assert logs and "endoview: random initialisation" in logs[0].read_text()
    ckpt = torch.load(trained / "epoch_1.pth", map_location="cpu", weights_only=True)  # the safe globals
    assert {"state_dict", "optimizer", "message_hub"} <= set(ckpt)


@pytest.mark.slow
def test_resume_continues(resumed):
    info = json.loads((resumed / "run.json").read_text())
    assert info["iterations"] == 2 * PER_FOLD and info["epochs_done"] == 2
    assert [s["resumed"] for s in info["sessions"]] == [False, True]
    assert info["sessions"][1]["start_iter"] == PER_FOLD
    assert (resumed / "epoch_2.pth").is_file()


@pytest.mark.slow
def test_export_writes_a_loadable_instances_bundle(resumed, coco, tmp_path, capsys):
    import cv2
    from mmdet.apis import inference_detector, init_detector

    from train.seg.cli import main as seg_main

    assert seg_main(["export-seg", str(resumed), "-o", str(tmp_path / "b"), "--json"]) == 0
    out = capsys.readouterr().out  # mmengine prints too: the JSON is the last thing
    report = json.loads(out[out.rindex('{\n  "bundle"'):])
    b = load_bundle(tmp_path / "b")
    assert report["bundle"] == str(b.path)
    # the self-check ran on the run's first held-out image (fold 1 is held out), not a random one
    check = report["parity"]["self_check"]
    held_out = json.loads((coco / "annotations" / "fold1.json").read_text())["images"][0]["file_name"]
    assert Path(check["image"]) == (coco / "images" / held_out).resolve()
    assert b.task == "instances" and b.labels == ("polyp",) and b.input_size == (128, 128)
    assert b.formats == {"mmdet": "model.pth", "mmdet-config": "config.py"} and b.trained
    assert b.outputs == {"masks": "masks", "boxes": "boxes", "scores": "scores"}
    assert b.manifest["training"]["weights"] == "random" and "val" in b.manifest["metrics"]
    # Every parameter in float32 (77,020,772 of them, counted above: 308 MB); on top, only the BN
    # running statistics (53,179 values) and the zip container: under 1 MiB. A half-precision file
    # or one that kept the optimizer's momentum (a second copy of every weight) falls outside.
    size, weights = b.file("mmdet").stat().st_size, 4 * _cascade_parameters()
    assert weights <= size < weights + 2**20, (size, weights)
    ckpt = torch.load(b.file("mmdet"), map_location="cpu", weights_only=True)
    assert set(ckpt) == {"meta", "state_dict"} and ckpt["meta"]["dataset_meta"]["classes"] == ["polyp"]
    text = b.file("mmdet-config").read_text()
    assert str(coco) not in text and "custom_imports" not in text and "score_thr=0.5" in text
    # the engine's way in: init_detector / inference_detector; a threshold of 0 so a barely trained
    # model still returns instances
    model = init_detector(str(b.file("mmdet-config")), str(b.file("mmdet")), device="cpu",
                          cfg_options={"model.test_cfg.rcnn.score_thr": 0.0})
    image = cv2.imread(check["image"])
    assert (check["width"], check["height"]) == (image.shape[1], image.shape[0])
    inst = inference_detector(model, image).pred_instances
    n = len(inst.scores)
    assert n > 0
    assert tuple(inst.masks.shape) == (n, *image.shape[:2]) and tuple(inst.bboxes.shape) == (n, 4)
    # The self-check's count used to be checked with `>= 0`, true of any count. Counted here
    # independently: the same weights on the same image at the bundle's score_thr 0.5 keep exactly
    # the instances scoring above 0.5 here (MMDetection keeps scores > score_thr; NMS visits boxes
    # best first, so the ones below 0.5 change nothing for those above, and max_per_img keeps the best).
    assert check["instances"] == int((inst.scores > 0.5).sum())


@pytest.mark.slow
def test_weights_file_is_loaded_and_recorded(coco, tmp_path):
    fake = tmp_path / "coco.pth"  # a COCO-like checkpoint: one backbone tensor, 80-class heads
    torch.save({"meta": {"CLASSES": ["person"] * 80},
                "state_dict": {"backbone.conv1.weight": torch.randn(64, 3, 7, 7),
                               "roi_head.bbox_head.0.fc_cls.weight": torch.zeros(81, 1024),
                               "roi_head.mask_head.0.conv_logits.weight": torch.zeros(80, 256, 1, 1)}}, fake)
    out = tmp_path / "run"
    assert main(shrunk_args(coco, out, "--weights", str(fake), "--epochs", "0")) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["weights"] == f"coco:{cascade_train.sha256_file(fake)}" and info["iterations"] == 0
    match = info["sessions"][0]["weights_match"]
    assert (match["loaded"], match["skipped"], match["model_tensors"]) == (1, 2, CASCADE_TENSORS)
    state = torch.load(out / "epoch_0.pth", map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(state["backbone.conv1.weight"],
                               torch.load(fake, weights_only=True)["state_dict"]["backbone.conv1.weight"])
    log = next(out.glob("*/*.log")).read_text()
    assert f"endoview: COCO-pretrained weights {fake}" in log and "roi_head.bbox_head.0.fc_cls.weight" in log


@pytest.mark.slow
def test_the_engine_runs_it_as_second_pass_and_eval_seg_scores_it(resumed, data_dir, tmp_path):
    """The exported bundle through the engine: InstancePass on a real frame (masks and boxes in frame
    pixels, inside the field), the second-pass worker and overlay in 'annotate', and eval-seg."""
    import cv2

    from engine.analysis.content_area import detect_content_area
    from engine.analysis.instances import InstancePass
    from engine.types import Frame
    from train.seg.cli import main as seg_main
    from train.seg.evaluate import evaluate_bundle, find_pairs

    assert seg_main(["export-seg", str(resumed), "-o", str(tmp_path / "b")]) == 0
    bundle = load_bundle(tmp_path / "b")
    image = cv2.imread(str(sorted((data_dir / "kvasir-seg" / "images").iterdir())[0]))
    area = detect_content_area(image)
    sp = InstancePass.from_bundle(bundle, "cpu", score_threshold=0.0)  # barely trained: keep everything
    r = sp(Frame(5, 0.2, image, 0.0), area)
    n = len(r.scores)
    assert n > 0 and r.frame_index == 5 and r.label == "polyp" and r.latency_ms > 0
    assert r.masks.shape == (n, *image.shape[:2]) and r.boxes.shape == (n, 4)
    assert not (r.masks & (area.mask == 0)[None]).any()  # nothing outside the visible field
    x, y, w, h = area.bbox
    assert (r.boxes[:, 0] >= x - 1e-3).all() and (r.boxes[:, 2] <= x + w + 1e-3).all()
    assert list(r.scores) == sorted(r.scores, reverse=True)

    # the runtime opens it as the configured second pass; the worker answers and the overlay draws it
    import time

    from engine.config import load_config
    from engine.overlay import Overlay
    from engine.runtime import open_second_pass
    from engine.types import FrameResult

    with open_second_pass(load_config().override(bundle=bundle.path, second_pass=bundle.path)) as worker:
        worker.request(Frame(9, 0.3, image, 0.0), area)
        deadline = time.monotonic() + 120
        while worker.latest is None and worker.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert worker.error is None and worker.latest is not None and worker.latest.frame_index == 9
    canvas = image.copy()
    result = FrameResult(Frame(12, 0.4, canvas, 0.0), area, second_pass=worker.latest)
    Overlay.default(names=["second_pass"]).draw(canvas, result, shown_index=12)
    assert (canvas != image).any()  # its label panel with the age (and masks, boxes when found)
    assert result.to_log_row()["second_pass"]["frame_index"] == 9

    # eval-seg: Table 2's columns for an instances bundle (the paper's thresholds: few or no masks yet)
    pairs = find_pairs(data_dir / "kvasir-seg" / "images", data_dir / "kvasir-seg" / "masks")[:2]
    m = evaluate_bundle(bundle.path, pairs, device="cpu")
    assert m["images"] == 2 and m["backend"] == "mmdetection" and m["fps"] > 0
    assert all(0.0 <= m[k] <= 1.0 for k in ("jaccard", "dice", "recall", "precision"))
