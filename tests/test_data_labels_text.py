"""Label encoding and report text, including the real IU X-ray reports."""

from __future__ import annotations

import numpy as np
import pytest

from medgen.data.labels import (
    apply_uncertain_policy,
    encode_findings,
    findings_vocabulary,
    label_counts,
    match_label_names,
    parse_chexpert_value,
    parse_findings,
)
from medgen.data.text import clean_report, load_iu_xray_reports, template_prompt


def test_chexpert_values():
    assert [parse_chexpert_value(v) for v in ("1.0", "0.0", "-1.0", "", float("nan"), None, " 1 ")] == [
        1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0
    ]  # fmt: skip
    with pytest.raises(ValueError, match="'2'"):
        parse_chexpert_value("2")


@pytest.mark.parametrize(
    ("policy", "expected"), [("ones", [1, 0, 1]), ("zeros", [1, 0, 0]), (0.5, [1, 0, 0.5]), ("ignore", None)]
)
def test_uncertain_policies(policy, expected):
    result = apply_uncertain_policy(np.array([1.0, 0.0, -1.0]), policy)
    if expected is None:
        assert result is None
    else:
        np.testing.assert_array_equal(result, np.array(expected, dtype=np.float32))
    np.testing.assert_array_equal(apply_uncertain_policy(np.array([1.0, 0.0]), "ignore"), [1.0, 0.0])


def test_findings_parsing_and_vocabulary():
    rows = [parse_findings(v) for v in ("Effusion|Pneumonia", "No Finding", "", "cardiomegaly| Effusion ")]
    assert rows[0] == ["Effusion", "Pneumonia"] and rows[1] == ["No Finding"]
    assert rows[2] == [] and parse_findings("No finding") == ["No finding"]  # blank is not relabelled; spelling kept
    assert findings_vocabulary(rows, multi_label=True) == ["cardiomegaly", "Effusion", "Pneumonia"]
    assert "No Finding" in findings_vocabulary(rows, multi_label=False)
    np.testing.assert_array_equal(encode_findings(rows[3], ["Cardiomegaly", "Effusion", "Pneumonia"]), [1, 1, 0])


def test_label_name_matching():
    assert match_label_names(["pleural effusion", "EDEMA"], ["Edema", "Pleural Effusion"]) == [
        "Pleural Effusion", "Edema"
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown label 'Pneumonitis'; valid labels are \['Edema'"):
        match_label_names(["Pneumonitis"], ["Edema", "Pleural Effusion"])
    with pytest.raises(ValueError, match="twice"):
        match_label_names(["edema", "Edema"], ["Edema"])


def test_label_counts():
    counts = label_counts(np.array([[1, 0], [1, 1], [0, 0]]), ["a", "b"])
    assert counts == {"a": 2, "b": 1, "(no label set)": 1}


def test_prompts():
    assert template_prompt(["Pneumonia", "Pleural_Effusion"]) == "chest x-ray, pneumonia, pleural effusion"
    assert template_prompt([]) == "chest x-ray, no finding"
    assert template_prompt(["No Finding"]) == "chest x-ray, no finding"
    assert template_prompt(["edema"], "frontal radiograph showing {labels}") == "frontal radiograph showing edema"


def test_clean_report():
    assert clean_report("Heart  size normal. There are no XXXX of effusion.", "Normal chest x-XXXX.") == (
        "Heart size normal. There are no of effusion. Normal chest."
    )
    assert clean_report("None.", "No acute disease") == "No acute disease."
    assert clean_report(float("nan"), "XXXX XXXX.") == ""


def test_iu_reports_real(iu_reports_dir):
    import pandas as pd

    frame = load_iu_xray_reports(iu_reports_dir)
    projections = pd.read_csv(iu_reports_dir / "indiana_projections.csv", dtype=str)
    reports = pd.read_csv(iu_reports_dir / "indiana_reports.csv", dtype=str)
    assert len(frame) == projections["uid"].isin(reports["uid"]).sum()
    assert list(frame.columns) == ["uid", "filename", "projection", "text", "problems"]
    assert not frame["text"].str.contains("XXXX").any()
    assert not frame["text"].str.contains(r"\s{2,}|\bNone\.", regex=True).any()
    non_empty = frame[frame["text"] != ""]
    assert len(non_empty) > 0.95 * len(frame)
    first = frame.iloc[0]
    assert first["filename"].endswith(".png") and first["problems"] == ["normal"]
    with pytest.raises(FileNotFoundError, match="indiana_reports.csv"):
        load_iu_xray_reports(iu_reports_dir / "nowhere")
