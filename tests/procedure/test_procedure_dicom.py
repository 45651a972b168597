"""DICOM Secondary Capture round trips: modality, SOP class, size, pixels, empty patient, blackout."""

from __future__ import annotations

import datetime as dt

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from engine.procedure.dicom import (
    DicomError,
    Patient,
    deidentify_pixels,
    read_dicom,
    save_report_page,
    save_snapshot,
    secondary_capture,
    write_dicom,
)
from engine.types import ContentArea


def frame_with_text(w=640, h=480, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.putText(img, "DOE^JANE 1970-01-01", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return img


def octagon_area(w=640, h=480):
    poly = np.array([[150, 40], [490, 40], [600, 150], [600, 330], [490, 440], [150, 440], [40, 330], [40, 150]],
                    np.int32)
    return ContentArea((40, 40, 561, 401), "octagon", poly, 0.9, (w, h))


def test_a_snapshot_round_trips_with_the_outside_blacked_out(tmp_path):
    img = frame_with_text()
    area = octagon_area()
    path = save_snapshot(tmp_path / "snap.dcm", img, area=area)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "ES"
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation) == (480, 640, 3, "RGB")
    assert str(ds.PatientName) == "" and ds.PatientID == "" and ds.PatientBirthDate == ""
    assert ds.BurnedInAnnotation == "NO"
    expected = img.copy()
    expected[area.mask == 0] = 0
    assert np.array_equal(ds.pixel_array, expected[..., ::-1])
    assert not ds.pixel_array[:25, :300].any()  # the burned-in "name" is gone
    assert "StudyDate" in ds and ds.StudyDate == ""  # present, empty: no date unless given


def test_pixels_are_kept_exactly_without_an_area_and_flagged_as_possibly_identifying(tmp_path):
    img = frame_with_text(seed=1)
    path = write_dicom(tmp_path / "raw.dcm", secondary_capture(img))
    ds = read_dicom(path)
    assert np.array_equal(ds.pixel_array, img[..., ::-1])
    assert ds.BurnedInAnnotation == "YES" and ds.Modality == "OT"


def test_a_rectangle_and_blackout_boxes(tmp_path):
    img = np.full((100, 200, 3), 200, np.uint8)
    out = deidentify_pixels(img, (10, 20, 150, 60), blackout=[(50, 30, 10, 10)])
    assert not out[:20].any() and not out[80:].any() and not out[:, :10].any() and not out[:, 160:].any()
    assert not out[30:40, 50:60].any() and out[50, 100].tolist() == [200, 200, 200]
    ds = secondary_capture(img, blackout=[(0, 0, 200, 10)])
    assert ds.BurnedInAnnotation == "NO" and not ds.pixel_array[:10].any()


def test_patient_fields_and_date_when_the_caller_gives_them(tmp_path):
    when = dt.datetime(2024, 5, 6, 7, 8, 9)
    ds = secondary_capture(frame_with_text(), patient=Patient("Doe^Jane", "123", "19700101", "F"), when=when,
                           description="snapshot of polyp 1")
    path = write_dicom(tmp_path / "p.dcm", ds)
    back = read_dicom(path)
    assert str(back.PatientName) == "Doe^Jane" and back.PatientID == "123" and back.PatientSex == "F"
    assert back.StudyDate == "20240506" and back.ContentTime == "070809"
    assert "research use only" in back.ImageComments


def test_a_report_page_round_trips(tmp_path):
    from engine.procedure.report import render_page

    page = render_page({"frames": 10, "duration_s": 1.0, "polyps": 0, "tracks": [], "cecum_s": None,
                        "withdrawal_s": None, "bbps": {}, "quality": None,
                        "timeline": {"bins": 2, "start_s": 0, "end_s": 1, "classes": ["bbps-2-3", None],
                                     "polyp": [0, 1], "quality": [None, None]}})
    path = save_report_page(tmp_path / "report.dcm", page)
    ds = read_dicom(path)
    assert ds.Modality == "OT" and ds.SOPClassUID == SecondaryCaptureImageStorage
    assert (ds.Rows, ds.Columns) == page.shape[:2] and ds.BurnedInAnnotation == "NO"
    assert np.array_equal(ds.pixel_array, page[..., ::-1])
    assert str(ds.PatientName) == ""


def test_two_images_of_one_series_share_its_uids():
    a = secondary_capture(frame_with_text(), study_uid="1.2.3", series_uid="1.2.3.4", instance_number=1)
    b = secondary_capture(frame_with_text(), study_uid="1.2.3", series_uid="1.2.3.4", instance_number=2)
    assert a.SeriesInstanceUID == b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID


def test_bad_input_and_existing_outputs(tmp_path):
    with pytest.raises(DicomError, match="uint8"):
        secondary_capture(np.zeros((4, 4), np.uint8))
    with pytest.raises(DicomError, match="frame"):
        secondary_capture(frame_with_text(320, 240), area=octagon_area())
    path = save_snapshot(tmp_path / "x.dcm", frame_with_text())
    with pytest.raises(DicomError, match="exists"):
        save_snapshot(path, frame_with_text())
    save_snapshot(path, frame_with_text(), force=True)
    with pytest.raises(DicomError, match="folder does not exist"):
        save_snapshot(tmp_path / "nope" / "x.dcm", frame_with_text())
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(DicomError, match="not a readable DICOM"):
        read_dicom(tmp_path / "junk.dcm")
    assert not list(tmp_path.glob(".*partial"))
