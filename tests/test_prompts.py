"""Prompts made from each image's metadata (medgen.data.prompts): truthful, varied, seeded, held out per set."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SHARED_DATA
from medgen.config import load_config
from medgen.data import DataConfig
from medgen.data.text import clean_report
from medgen.data.prompts import (
    MODALITY_PHRASES,
    PHRASINGS_PER_IMAGE,
    PROMPT_SETS,
    PromptFacts,
    choose_phrasing,
    group_prompts,
    mentions,
    phrasings,
    row_prompt,
    split_phrasings,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = REPO_ROOT / "train_configs" / "medical_text_128.yaml"
SET_FOLDERS = {
    "kermany": "kermany-cxr-224", "busi": "busi-ultrasound", "covid_notes": "covid-cxr-notes",
    "lung_cxr_tb": "lung-cxr-masks", "brain_mri": "brain-tumor-mri", "lung_ct": "lung-ct-iqothnccd",
}
MODALITY_WORDS = {
    "chest_xray": ["x-ray", "radiograph", "CXR"], "chest_ct": ["CT", "computed tomography"],
    "brain_mri": ["MRI", "MR", "magnetic resonance"], "breast_ultrasound": ["ultrasound", "sonogram", "sonographic"],
}
TUMOUR_WORDS = ["glioma", "glial", "meningioma", "meningeal", "pituitary", "tumor"]
PNEUMONIA_WORDS = ["pneumonia", "bacterial", "viral"]


def _rows(set_name: str) -> list[dict]:
    folder = SHARED_DATA / SET_FOLDERS[set_name]
    if not folder.exists():
        pytest.skip(f"real data not found at {folder} (set MEDGEN_SHARED_DATA to the shared data folder)")
    return pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False).to_dict("records")


def _prompts(set_name: str) -> list[tuple[dict, list[str]]]:
    return [(row, split_phrasings(row_prompt(set_name, row, row["file_name"]))) for row in _rows(set_name)]


def _modality_of(prompt: str) -> list[str]:
    return [key for key, words in MODALITY_WORDS.items() if mentions(prompt, words)]


@pytest.mark.parametrize("set_name", sorted(SET_FOLDERS))
def test_every_phrasing_names_its_own_modality_only(set_name):
    expected = {"kermany": "chest_xray", "busi": "breast_ultrasound", "lung_cxr_tb": "chest_xray", "brain_mri": "brain_mri",
                "lung_ct": "chest_ct"}
    for row, prompts in _prompts(set_name):
        modality = expected.get(set_name) or {"X-ray": "chest_xray", "CT": "chest_ct"}[row["modality"]]
        for prompt in prompts:
            if set_name == "busi" and prompt.lower().startswith(("an ultrasound", "ultrasound of", "a ", "this ", "echographic", "sonographic appearance")):
                assert mentions(prompt, ["breast"]), prompt  # the set's own captions
                continue
            notes = clean_report(row.get("clinical_notes", ""))
            said = prompt.replace(notes, "") if notes else prompt  # notes may name other studies ("CT showed ...")
            assert _modality_of(said) == [modality], (row["file_name"], prompt)


def test_kermany_prompts_say_the_subtype_and_nothing_else():
    prompts = _prompts("kermany")
    seen = set()
    for row, phrasings_ in prompts:
        for prompt in phrasings_:
            said = set(mentions(prompt, PNEUMONIA_WORDS))
            if row["label"] == "normal":
                assert not said, prompt
                assert not mentions(prompt, ["tuberculosis", "TB"]), prompt
            elif row["subtype"] == "virus":
                assert "viral" in said and "bacterial" not in said, prompt
            else:
                assert "bacterial" in said and "viral" not in said, prompt
            seen.add((row["label"], row["subtype"]))
            assert not mentions(prompt, ["infant", "adult"]), prompt  # children aged 1-5
    assert seen == {("normal", "none"), ("pneumonia", "bacteria"), ("pneumonia", "virus")}


def test_busi_normal_never_says_lesion_and_each_label_says_itself():
    for row, prompts in _prompts("busi"):
        for prompt in prompts:
            if row["label"] == "normal":
                assert not mentions(prompt, ["lesion", "mass", "benign", "malignant", "cancer"]), prompt
                assert mentions(prompt, ["normal", "no abnormality"]), prompt
            else:
                other = "malignant" if row["label"] == "benign" else "benign"
                assert mentions(prompt, [row["label"]]) and not mentions(prompt, [other]), prompt
    # the set's caption (templated from the label only) is one of the phrasings of some images
    captions = {row["caption"] for row in _rows("busi")}
    assert any(prompt in captions for _, prompts in _prompts("busi") for prompt in prompts)


def test_brain_lung_ct_and_tuberculosis_prompts_follow_the_label():
    for row, prompts in _prompts("brain_mri"):
        for prompt in prompts:
            said = mentions(prompt, TUMOUR_WORDS)
            if row["label"] == "no_tumor":
                assert said in ([], ["tumor"]) and (not said or any(w in prompt for w in ("no tumor", "without tumor", "no brain tumor"))), prompt
            else:
                assert said and not mentions(prompt, [w for w in ("glioma", "meningioma", "pituitary") if w != row["label"]]), prompt
    for row, prompts in _prompts("lung_ct"):
        for prompt in prompts:
            if row["label"] == "normal":
                assert not mentions(prompt, ["benign", "malignant", "cancer", "tumor", "lesion"]), prompt
            elif row["label"] == "malignant":
                assert mentions(prompt, ["malignant", "cancer"]) and not mentions(prompt, ["benign"]), prompt
            else:
                assert mentions(prompt, ["benign"]) and not mentions(prompt, ["malignant", "cancer"]), prompt
    for row, prompts in _prompts("lung_cxr_tb"):
        for prompt in prompts:
            assert bool(mentions(prompt, ["tuberculosis", "TB"])) == (row["label"] == "tuberculosis"), prompt
            assert not mentions(prompt, ["pneumonia", "pediatric", "child's"]), prompt


def test_covid_notes_prompts_carry_the_finding_and_the_notes():
    for row, prompts in _prompts("covid_notes"):
        notes = clean_report(row["clinical_notes"])
        if notes:  # every note reaches the model through some phrasing
            assert any(notes.rstrip(".") in prompt for prompt in prompts), (row["file_name"], prompts)
        for prompt in prompts:
            if row["finding"] == "COVID-19" and notes not in prompt:
                assert mentions(prompt, ["COVID-19", "SARS-CoV-2"]), prompt


def test_phrasings_are_seeded_varied_and_picked_per_step():
    facts = PromptFacts("chest_xray", "normal_chest", view="frontal")
    first = phrasings(facts, "images/a.png")
    assert first == phrasings(facts, "images/a.png")  # same image, same phrasings
    assert len(set(first)) == PHRASINGS_PER_IMAGE
    assert first != phrasings(facts, "images/b.png")
    # the "normal" paraphrase set: the radiologist's wordings, each with the modality
    every = {prompt for seed in range(200) for prompt in phrasings(facts, seed)}
    assert any("no acute findings" in prompt for prompt in every)
    assert any(prompt.startswith("normal ") and "chest radiograph" in prompt for prompt in every)
    assert all(_modality_of(prompt) == ["chest_xray"] for prompt in every)
    # training draws one phrasing per image per step, from the step's seed: reproducible, and it varies
    text = "\n".join(first)
    picks = [choose_phrasing(text, random.Random(step)) for step in range(40)]
    assert picks == [choose_phrasing(text, random.Random(step)) for step in range(40)]
    assert len(set(picks)) >= 5 and set(picks) <= set(first)
    assert choose_phrasing("plain clinical notes", random.Random(0)) == "plain clinical notes"
    # evaluation prompts: the canonical one first, then paraphrases
    prompts = group_prompts(PromptFacts("chest_xray", "viral_pneumonia", "frontal", "pediatric"))
    assert prompts[0] == "pediatric chest x-ray, viral pneumonia" and len(set(prompts)) == 3
    assert all("viral pneumonia" in prompt or "pneumonia, viral" in prompt or "viral origin" in prompt for prompt in prompts)


def test_unknown_values_and_names_are_errors():
    with pytest.raises(ValueError, match="'covid'.*not one it describes"):
        row_prompt("kermany", {"label": "covid", "subtype": "none"}, "x.png")
    with pytest.raises(ValueError, match=r"reads column\(s\) \['subtype'\]"):
        row_prompt("kermany", {"label": "normal"}, "x.png")
    with pytest.raises(ValueError, match="unknown prompt set 'kermani'.*kermany"):
        DataConfig(source="csv", path="x", prompts="kermani")
    with pytest.raises(ValueError, match="prompts"):
        DataConfig(source="folder", path="x", prompts="kermany")
    assert sorted(MODALITY_PHRASES) == sorted(MODALITY_WORDS)
    assert sorted(PROMPT_SETS) == sorted(SET_FOLDERS)


def test_a_bad_row_is_named(tmp_path):
    from medgen.data import build_dataset

    (tmp_path / "a.png").write_bytes(b"")
    pd.DataFrame({"file_name": ["a.png"], "label": ["tumour"]}).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"metadata.csv, row 2 \(a.png\).*'tumour'"):
        build_dataset(DataConfig(source="csv", path=str(tmp_path), findings_column="label", prompts="brain_mri"))


def test_config_loads_with_every_set_prompted_and_a_frozen_offline_encoder():
    config = load_config(CONFIG)
    sets = [config.data, *config.extra_data]
    assert [Path(s.path).name for s in sets] == [SET_FOLDERS[s.prompts] for s in sets]
    assert sorted(s.prompts for s in sets) == sorted(PROMPT_SETS)
    assert all(s.resolution == 128 for s in sets) and config.model.kind == "text"
    assert config.text.text_encoder == "minilm-offline" and config.text.train_last_layers == 0
    assert "dmis-lab/biobert-base-cased-v1.2" in CONFIG.read_text()
    assert Path(REPO_ROOT / config.model.pretrained_vae / "config.json").is_file()


def test_held_out_splits_do_not_overlap_and_follow_each_sets_caveats():
    from medgen.data.dataset import _plan

    config = load_config(CONFIG)
    for data in [config.data, *config.extra_data]:
        if not Path(data.path).is_absolute():
            data.path = str(REPO_ROOT / data.path)
        if not Path(data.path).exists():
            pytest.skip(f"real data not found at {data.path}")
        test_config = DataConfig.from_dict({**data.to_dict(), "split": "test"})
        train = {sample.key for sample in _plan(data).samples}
        test = {sample.key for sample in _plan(test_config).samples}
        name = Path(data.path).name
        assert train and test and not train & test, name
        assert 0.1 < len(test) / (len(train) + len(test)) < 0.35, name
        frame = pd.read_csv(Path(data.path) / "metadata.csv", dtype=str, keep_default_na=False)
        frame["key"] = [str(Path(data.path) / name) for name in frame["file_name"]]
        if name == "kermany-cxr-224":  # the official split is patient-level within each subtype
            ids = lambda keys: {(r.patient_id, r.subtype) for r in frame[frame.key.isin(keys)].itertuples()}  # noqa: E731
            assert not ids(train) & ids(test)
        if name == "lung-ct-iqothnccd":  # contiguous blocks: every test file number above every training number
            number = lambda key: int(Path(key).stem.rsplit("_", 1)[-1])  # noqa: E731
            for label in ("benign", "malignant", "normal"):
                in_label = lambda keys: [number(k) for k in keys if f"/{label}/" in k]  # noqa: E731
                assert min(in_label(test)) > max(in_label(train)), label


def _tiny_config(tmp_path: Path, vae_folder: Path) -> dict:
    def source(folder: str, prompts: str, **extra) -> dict:
        path = SHARED_DATA / folder
        if not path.exists():
            pytest.skip(f"real data not found at {path}")
        return {"source": "csv", "path": str(path), "findings_column": "label", "prompts": prompts, "resolution": 32,
                "holdout_fraction": 0.2, "cache_dir": str(tmp_path / "cache"), **extra}

    return {
        "data": source("busi-ultrasound", "busi", holdout_order="random", filters={"label": ["normal", "malignant"]},
                       max_samples=6),
        "extra_data": [source("lung-ct-iqothnccd", "lung_ct", holdout_order="last", filters={"label": ["benign"]}, max_samples=4)],
        "model": {"kind": "text", "pretrained_vae": str(vae_folder), "block_out_channels": [8, 16],
                  "attention_levels": [False, True], "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 8},
        "text": {"text_encoder": "minilm-offline", "max_length": 24},
        "diffusion": {"num_train_timesteps": 50, "num_inference_steps": 2},
        "output_dir": str(tmp_path / "run"), "train_batch_size": 4, "max_train_steps": 2, "checkpointing_steps": 2,
        "sample_every_steps": 0, "num_sample_images": 1, "log_every_steps": 1, "report_to": "none", "class_balance": 0.5,
    }


def test_training_on_several_prompted_sets_and_sampling_from_a_prompt(tmp_path):
    """A tiny text model on two real sets (busi + lung CT), 2 steps: union labels, phrasings, a pipeline that samples."""
    from helpers import tiny_vae

    from medgen.config import TrainConfig, from_dict
    from medgen.data import build_dataset
    from medgen.data.multisource import combine_datasets
    from medgen.pipelines import TextToImagePipeline, load_pipeline
    from medgen.train import main

    tiny_vae().save_pretrained(tmp_path / "vae")
    config = from_dict(TrainConfig, _tiny_config(tmp_path, tmp_path / "vae"))

    parts = [build_dataset(config.data), build_dataset(config.extra_data[0])]
    joined = combine_datasets(parts)
    assert joined.label_names == ["busi-ultrasound/malignant", "busi-ultrasound/normal", "lung-ct-iqothnccd/benign"]
    assert len(joined) == 10 and joined.label_counts()["lung-ct-iqothnccd/benign"] == 4
    row = joined[8]
    assert row["labels"].tolist() == [0.0, 0.0, 1.0] and row["pixel_values"].shape == (1, 32, 32)
    assert all("benign" in prompt for prompt in split_phrasings(row["text"]))

    assert main(config) == tmp_path / "run"
    card = (tmp_path / "run" / "README.md").read_text()  # the card says how prompts were made and what they lack
    assert "## Prompts" in card and "The model knows only what these prompts contained" in card
    assert "`breast ultrasound, malignant lesion`" in card and "2 image sets: `busi-ultrasound` (train)" in card
    pipe = load_pipeline(tmp_path / "run")
    assert isinstance(pipe, TextToImagePipeline)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("breast ultrasound, malignant lesion", num_inference_steps=2, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (1, 32, 32, 1) and np.isfinite(images).all()


def test_several_sets_need_matching_geometry_and_distinct_sets(tmp_path):
    from medgen.config import TrainConfig, from_dict

    values = _tiny_config(tmp_path, tmp_path / "vae")
    values["extra_data"][0]["resolution"] = 64
    with pytest.raises(ValueError, match=r"extra_data\[0\].*resolution 64"):
        from_dict(TrainConfig, values)
    values = _tiny_config(tmp_path, tmp_path / "vae")
    values["model"]["kind"] = "label"
    with pytest.raises(ValueError, match="model.kind vae or text"):
        from_dict(TrainConfig, values)


def test_training_encodes_one_phrasing_per_image_drawn_from_the_step_seed(tmp_path):
    from helpers import tiny_vae

    from medgen.config import TrainConfig, from_dict
    from medgen.training.text_task import TextTask

    tiny_vae().save_pretrained(tmp_path / "vae")
    task = TextTask(from_dict(TrainConfig, _tiny_config(tmp_path, tmp_path / "vae")), ["a", "b"], False)
    encoded: list[list[str]] = []
    encode = task._encode
    task._encode = lambda prompts: encoded.append(list(prompts)) or encode(prompts)
    phrasings_ = phrasings(PromptFacts("chest_xray", "normal_chest"), "x.png")
    texts = ["\n".join(phrasings_)] * 6 + ["plain clinical notes"]
    drop = torch.zeros(len(texts), dtype=torch.bool)
    drop[0] = True
    for step in (1, 1, 2):
        torch.manual_seed(step)  # the training loop seeds every step
        states = task.condition_kwargs({"text": texts}, drop)["encoder_hidden_states"]
        assert states.shape[0] == len(texts)
    first, again, other = encoded
    assert first == again and first != other  # the step's seed decides; another step draws again
    assert first[0] == "" and first[-1] == "plain clinical notes"  # dropped prompts are empty, plain text is kept
    assert set(first[1:-1]) <= set(phrasings_) and len(set(first[1:-1] + other[1:-1])) > 1


def test_the_example_prompts_of_a_multi_set_model_name_every_trained_group_once_in_set_order():
    from types import SimpleNamespace

    from medgen.data.prompts import default_sample_prompts

    sets = [SimpleNamespace(prompts=name) for name in ("kermany", None, "brain_mri", "kermany")]
    prompts = default_sample_prompts(sets)
    assert prompts[:3] == ["pediatric chest x-ray, normal", "pediatric chest x-ray, bacterial pneumonia", "pediatric chest x-ray, viral pneumonia"]
    assert set(prompts[3:]) == {"brain MRI, glioma", "brain MRI, meningioma", "brain MRI, pituitary tumor", "brain MRI, no tumor"}
    assert len(prompts) == len(set(prompts)) == 7  # a set listed twice adds nothing; a set without prompts neither
