import numpy as np
import pytest

from engine.analysis.classifier import Classifier, EmaSmoother, NoSmoothing, WindowSmoother, make_smoother
from engine.backends import open_backend
from engine.errors import BundleError


def test_window_smoother_is_the_mean_of_the_last_n():
    s = WindowSmoother(3)
    vs = [np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32),
          np.array([0.0, 1.0], np.float32), np.array([0.0, 1.0], np.float32)]
    out = [s.update(v) for v in vs]
    np.testing.assert_allclose(out[0], [1, 0])
    np.testing.assert_allclose(out[2], [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(out[3], [0, 1], atol=1e-7)
    s.reset()
    np.testing.assert_allclose(s.update(vs[0]), [1, 0])


def test_ema_smoother():
    s = EmaSmoother(0.5)
    s.update(np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(s.update(np.array([0.0, 1.0], np.float32)), [0.5, 0.5])


@pytest.mark.parametrize("spec, kind", [("off", NoSmoothing), (None, NoSmoothing),
                                        ("window:4", WindowSmoother), ("ema:0.2", EmaSmoother)])
def test_make_smoother(spec, kind):
    assert isinstance(make_smoother(spec), kind)


@pytest.mark.parametrize("spec", ["median:3", "window:0", "ema:2", "window:x"])
def test_make_smoother_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="smoothing|window|alpha"):
        make_smoother(spec)


def test_classifier_uses_the_manifest_labels_and_smooths(tiny_bundle):
    rng = np.random.default_rng(0)
    h, w = tiny_bundle.input_size
    with open_backend(tiny_bundle, "onnxruntime") as backend:
        clf = Classifier(tiny_bundle, backend, WindowSmoother(2))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pa = clf.predict(a, smooth=False)
        pb = clf.predict(b, smooth=False)
        clf.predict(a)
        both = clf.predict(b)
    assert pa.labels == tuple(tiny_bundle.labels)
    assert abs(pa.probabilities.sum() - 1) < 1e-5 and not pa.smoothed
    np.testing.assert_allclose(both.probabilities, (pa.probabilities + pb.probabilities) / 2, rtol=1e-5)
    assert both.smoothed and both.top(2)[0][1] >= both.top(2)[1][1]


def test_classifier_refuses_a_bundle_without_probabilities(tiny_bundle):
    import dataclasses

    broken = dataclasses.replace(tiny_bundle, outputs={"mask": "probs"})
    with pytest.raises(BundleError, match="probabilities"):
        Classifier(broken, backend=None)
