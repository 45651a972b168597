"""The paper's label sets (section 2.3), exactly, and how raw classes map onto each head."""

from __future__ import annotations

import pytest

from train.labels import (HEAD_NAMES, HEADS, MACRO_CLASSES, OESOPHAGUS_CLASSES, RAW_CLASSES, ULCER_CLASSES,
                          head_label, head_targets, parse_heads)


def test_raw_classes_are_the_23_of_the_split_file():
    assert len(RAW_CLASSES) == 23 == len(set(RAW_CLASSES))
    assert list(RAW_CLASSES) == sorted(RAW_CLASSES)
    assert "hemorroids" in RAW_CLASSES  # the split file's spelling


def test_auxiliary_heads_exactly_as_the_paper_lists_them():
    assert MACRO_CLASSES == ("other", "bbps-0-1", "bbps-2-3", "dyed-lifted-polyps", "dyed-resection-margins",
                             "impacted-stool", "normal-cecum", "normal-pylorus", "polyp", "retroflex-rectum",
                             "retroflex-stomach")
    assert OESOPHAGUS_CLASSES == ("other", "barretts", "normal-z-line", "oesophagitis-a", "oesophagitis-b-d",
                                  "short-segment-barretts")
    assert ULCER_CLASSES == ("other", "ulcerative-colitis-grade-0-1", "ulcerative-colitis-grade-1-2",
                             "ulcerative-colitis-grade-2-3", "ulcerative-colitis-grade-1",
                             "ulcerative-colitis-grade-2", "ulcerative-colitis-grade-3")
    assert (len(MACRO_CLASSES), len(OESOPHAGUS_CLASSES), len(ULCER_CLASSES)) == (11, 6, 7)
    assert HEAD_NAMES == ("raw", "macro", "oesophagus", "ulcer")


@pytest.mark.parametrize("head", ["macro", "oesophagus", "ulcer"])
def test_each_raw_class_maps_to_exactly_one_label_per_head(head):
    labels = HEADS[head]
    for raw in RAW_CLASSES:
        named = [label for label in labels if label == raw]
        assert len(named) <= 1
        expected = raw if named else "other"
        assert head_label(head, raw) == expected
    # every non-other label of the head is a raw class, and is reached by exactly that class
    targets = head_targets(head)
    assert len(targets) == 23
    for i, label in enumerate(labels):
        hits = [RAW_CLASSES[j] for j, t in enumerate(targets) if t == i]
        if label == "other":
            assert hits and all(h not in labels for h in hits)
        else:
            assert hits == [label]


def test_classes_in_no_auxiliary_head_are_other_everywhere():
    for raw in ("ileum", "hemorroids"):
        assert {head_label(h, raw) for h in ("macro", "oesophagus", "ulcer")} == {"other"}


def test_parse_heads():
    assert parse_heads("all") == HEAD_NAMES
    assert parse_heads("ulcer,raw") == ("raw", "ulcer")
    assert parse_heads("raw") == ("raw",)
    with pytest.raises(ValueError, match="must include 'raw'"):
        parse_heads("macro")
    with pytest.raises(ValueError, match="unknown head"):
        parse_heads("raw,colon")
