"""Snapshots and report pages as DICOM Secondary Capture images (pydicom).

:func:`secondary_capture` builds the dataset, :func:`write_dicom` writes it (temporary name, then
rename; an existing file is kept unless ``force``); :func:`save_snapshot` and
:func:`save_report_page` are the two uses.

De-identification: the patient fields are present but empty unless the caller fills them
(:class:`Patient`), and no date is written unless one is given. endoview draws no patient text
itself, but a frame from the capture card carries the endoscope processor's on-screen text
(patient name, date of birth, settings) in the black border around the field. So a snapshot's
pixels outside the content area are blacked out whenever the area is given (a
:class:`engine.types.ContentArea`: outside its polygon; a plain (x, y, w, h): outside that
rectangle), and any further ``blackout`` rectangles too (text the processor writes inside the
field). ``BurnedInAnnotation`` says "NO" only when that was done (or the caller vouches for the
image, as for a report page rendered here), else "YES".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from .. import __version__
from ..errors import EndoviewError
from ..files import replacing
from ..types import ContentArea

Rect = Sequence[int]  # x, y, w, h


class DicomError(EndoviewError):
    """A DICOM file cannot be made or written."""


@dataclass(frozen=True)
class Patient:
    """What the caller knows and may write; everything defaults to empty (DICOM type 2: present, empty)."""

    name: str = ""
    id: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""  # M, F, O or empty


def deidentify_pixels(image: np.ndarray, area: ContentArea | Rect | None = None,
                      blackout: Sequence[Rect] = ()) -> np.ndarray:
    """A copy of ``image`` with everything outside ``area`` and inside each ``blackout`` box black."""
    img = np.array(image, copy=True)
    h, w = img.shape[:2]
    if isinstance(area, ContentArea):
        if area.frame_size != (w, h):
            raise DicomError(f"the content area is for a {area.frame_size[0]}x{area.frame_size[1]} frame, "
                             f"the image is {w}x{h}")
        if area.shape != "full":
            img[area.mask == 0] = 0
    elif area is not None:
        x, y, bw, bh = (int(v) for v in area)
        keep = np.zeros((h, w), bool)
        keep[max(0, y):max(0, y + bh), max(0, x):max(0, x + bw)] = True
        img[~keep] = 0
    for box in blackout:
        x, y, bw, bh = (int(v) for v in box)
        img[max(0, y):max(0, y + bh), max(0, x):max(0, x + bw)] = 0
    return img


def secondary_capture(image_bgr: np.ndarray, *, patient: Patient | None = None, modality: str = "OT",
                      description: str = "", area: ContentArea | Rect | None = None,
                      blackout: Sequence[Rect] = (), burned_in_text: bool | None = None,
                      study_uid: str | None = None, series_uid: str | None = None,
                      series_number: int = 1, instance_number: int = 1,
                      when: _dt.datetime | None = None) -> Dataset:
    """A Secondary Capture Image Storage dataset of an 8-bit BGR image (stored as RGB).

    area / blackout: see :func:`deidentify_pixels` (applied before anything is stored).
    burned_in_text: whether the pixels may carry identifying text; default: False when an area or
    blackout boxes were given, else True. study_uid / series_uid: to group several images (new
    UIDs when None). when: the content date and time (none written when None).
    """
    image = np.asarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise DicomError(f"a DICOM image must be H x W x 3 uint8, not {image.dtype} {image.shape}")
    pixels = deidentify_pixels(image, area, blackout) if (area is not None or blackout) else image
    rgb = np.ascontiguousarray(pixels[..., ::-1])
    if burned_in_text is None:
        burned_in_text = area is None and not blackout
    patient = patient or Patient()

    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    # patient and study: type 2, present and empty unless given
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyDate = when.strftime("%Y%m%d") if when else ""
    ds.StudyTime = when.strftime("%H%M%S") if when else ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = int(instance_number)
    ds.PatientOrientation = ""
    ds.ConversionType = "WSD"  # workstation
    ds.SecondaryCaptureDeviceManufacturer = "endoview"
    ds.SecondaryCaptureDeviceManufacturerModelName = "endoview"
    ds.SecondaryCaptureDeviceSoftwareVersions = __version__
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if description:
        ds.SeriesDescription = description[:64]
        ds.ImageComments = f"{description} (research use only, not a diagnostic device)"
    else:
        ds.ImageComments = "research use only, not a diagnostic device"
    if when:
        ds.ContentDate = when.strftime("%Y%m%d")
        ds.ContentTime = when.strftime("%H%M%S")
    ds.BurnedInAnnotation = "YES" if burned_in_text else "NO"
    ds.set_pixel_data(rgb, photometric_interpretation="RGB", bits_stored=8, generate_instance_uid=False)
    return ds


def write_dicom(path: str | Path, ds: Dataset, *, force: bool = False) -> Path:
    """Write ``ds`` as a DICOM file (with its preamble and file meta), temporary name then rename."""
    with replacing(path, force=force, error=DicomError) as tmp:
        try:
            ds.save_as(tmp, enforce_file_format=True)
        except ValueError as exc:
            raise DicomError(f"cannot write {path}: {exc}") from None
    return Path(path)


def save_snapshot(path: str | Path, image_bgr: np.ndarray, *, area: ContentArea | Rect | None = None,
                  blackout: Sequence[Rect] = (), patient: Patient | None = None, force: bool = False,
                  **kwargs) -> Path:
    """A frame as DICOM (modality ES, endoscopy), blacked out outside ``area`` when given."""
    ds = secondary_capture(image_bgr, patient=patient, modality=kwargs.pop("modality", "ES"),
                           description=kwargs.pop("description", "endoview snapshot"), area=area,
                           blackout=blackout, **kwargs)
    return write_dicom(path, ds, force=force)


def save_report_page(path: str | Path, page_bgr: np.ndarray, *, patient: Patient | None = None,
                     force: bool = False, **kwargs) -> Path:
    """A report page rendered by :func:`engine.procedure.report.render_page` as DICOM (modality OT).

    A page holds only what endoview drew, so ``BurnedInAnnotation`` is "NO" by default; pass
    ``burned_in_text=True`` when it carries thumbnails of video frames, which may show text the
    processor drew inside the field.
    """
    ds = secondary_capture(page_bgr, patient=patient, modality=kwargs.pop("modality", "OT"),
                           description=kwargs.pop("description", "endoview procedure report"),
                           burned_in_text=kwargs.pop("burned_in_text", False), **kwargs)
    return write_dicom(path, ds, force=force)


def read_dicom(path: str | Path) -> Dataset:
    """Read a DICOM file back (for checks and tests)."""
    try:
        return pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({exc})") from None
