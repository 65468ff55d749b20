"""Prompts made from what each image's metadata really says, in several phrasings.

A *prompt set* reads one CSV row of a known image set (`../shared/data` or a user's copy with the same
columns) and states its facts: the modality, the view where the set records one, the population where the
whole set is one (Kermany: children), the label, a subtype (Kermany bacterial / viral pneumonia) and free-text
clinical notes (covid-cxr-notes). Nothing else: a prompt never claims what the data does not say (no sequence or
plane for the brain MRIs, no lesion for a normal breast).

Each fact has several phrasings ("chest x-ray" / "chest radiograph" / "CXR"; "normal chest radiograph" / "chest
x-ray, no acute findings"), so that the text encoder, not one fixed string, carries the meaning. An image's
`text` holds `PHRASINGS_PER_IMAGE` distinct phrasings, drawn with a seed from its file name and joined by
`PHRASING_SEPARATOR`; training picks one of them each time the image is drawn (`choose_phrasing`), seeded by
the training step, so every epoch shows each image with another wording.

`DataConfig.prompts` names the set (`PROMPT_SETS`); `prompt_groups` lists, for evaluation, the (label,
subtype) groups of a set with the prompts that ask for each and the CSV filters that select its real images.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

PHRASING_SEPARATOR = "\n"  # cleaned notes and templates never hold a line break
PHRASINGS_PER_IMAGE = 8
PROMPTS_VERSION = "2"  # bump when a phrasing changes, so cached datasets re-plan their text

MODALITY_PHRASES: dict[str, tuple[str, ...]] = {
    "chest_xray": ("chest x-ray", "chest radiograph", "CXR", "radiograph of the chest", "chest X-ray image"),
    "chest_ct": ("chest CT", "CT scan of the chest", "thoracic CT slice", "lung CT image", "computed tomography of the chest"),
    "brain_mri": ("brain MRI", "MRI of the brain", "brain MR image", "magnetic resonance image of the brain", "head MRI slice"),
    "breast_ultrasound": (
        "breast ultrasound", "ultrasound image of the breast", "breast sonogram", "B-mode ultrasound of the breast",
        "sonographic image of the breast",
    ),
}
MODALITY_NAMES = {
    "chest_xray": "chest x-ray", "chest_ct": "chest CT", "brain_mri": "brain MRI", "breast_ultrasound": "breast ultrasound",
}
VIEW_PHRASES: dict[str, tuple[str, ...]] = {
    "frontal": ("frontal", "frontal view"),
    "pa": ("PA", "posteroanterior", "frontal PA"),
    "ap": ("AP", "anteroposterior", "frontal AP"),
    "ap_supine": ("AP supine", "supine AP", "supine anteroposterior"),
    "lateral": ("lateral", "lateral view"),
    "axial": ("axial", "axial slice"),
    "coronal": ("coronal", "coronal reconstruction"),
}
POPULATION_PHRASES: dict[str, tuple[str, ...]] = {
    "pediatric": ("pediatric", "paediatric", "child's", "child"),  # Kermany: children aged 1-5
}

# Finding phrasings: "{m}" is the modality phrase (with view / population where known). Every phrasing of one
# finding states that finding and nothing more.
_CHEST_NORMAL = (
    "{m}, normal", "normal {m}", "{m}: no acute findings", "{m} with no acute cardiopulmonary abnormality",
    "{m}, clear lungs, no acute disease", "{m} within normal limits", "no acute findings on {m}",
)
FINDING_PHRASES: dict[str, tuple[str, ...]] = {
    "normal_chest": _CHEST_NORMAL,
    "pneumonia": ("{m}, pneumonia", "{m} showing pneumonia", "pneumonia on {m}", "{m}: findings of pneumonia"),
    "bacterial_pneumonia": (
        "{m}, bacterial pneumonia", "{m} showing bacterial pneumonia", "bacterial pneumonia on {m}",
        "{m}: pneumonia, bacterial", "{m}, pneumonia of bacterial origin",
    ),
    "viral_pneumonia": (
        "{m}, viral pneumonia", "{m} showing viral pneumonia", "viral pneumonia on {m}", "{m}: pneumonia, viral",
        "{m}, pneumonia of viral origin",
    ),
    "tuberculosis": (
        "{m}, tuberculosis", "{m} showing pulmonary tuberculosis", "tuberculosis on {m}", "{m}: findings of TB",
        "{m} consistent with tuberculosis",
    ),
    "covid19": (
        "{m}, COVID-19", "{m} showing COVID-19 pneumonia", "COVID-19 pneumonia on {m}", "{m}: SARS-CoV-2 infection",
    ),
    "sars": ("{m}, SARS", "{m} showing SARS", "{m}: severe acute respiratory syndrome", "SARS on {m}"),
    "streptococcus": (
        "{m}, streptococcal pneumonia", "{m} showing Streptococcus pneumonia", "{m}: streptococcus infection",
    ),
    "ards": ("{m}, ARDS", "{m} showing acute respiratory distress syndrome", "{m}: ARDS"),
    "pneumocystis": ("{m}, Pneumocystis pneumonia", "{m} showing pneumocystis pneumonia", "{m}: PCP pneumonia"),
    "no_finding": ("{m}, no finding", "{m}: no finding recorded", "{m} with no finding"),
    "glioma": ("{m}, glioma", "{m} showing a glioma", "glioma on {m}", "{m}: glial tumor"),
    "meningioma": ("{m}, meningioma", "{m} showing a meningioma", "meningioma on {m}", "{m}: meningeal tumor"),
    "pituitary_tumor": (
        "{m}, pituitary tumor", "{m} showing a pituitary tumor", "pituitary tumor on {m}", "{m}: tumor of the pituitary region",
    ),
    "normal_brain": ("{m}, no tumor", "normal {m}", "{m}: no brain tumor", "{m} without tumor", "{m}, normal"),
    "benign_breast": (
        "{m}, benign lesion", "{m} showing a benign mass", "{m}: benign findings", "benign breast lesion on {m}",
    ),
    "malignant_breast": (
        "{m}, malignant lesion", "{m} showing a malignant mass", "{m}: malignant findings", "malignant breast lesion on {m}",
    ),
    "normal_breast": ("{m}, normal", "normal {m}", "{m}: normal breast tissue", "{m} with no abnormality"),
    "benign_lung": ("{m}, benign case", "{m} showing a benign lung lesion", "{m}: benign findings", "benign lung lesion on {m}"),
    "malignant_lung": (
        "{m}, malignant case", "{m} showing a malignant lung tumor", "{m}: lung cancer", "malignant lung lesion on {m}",
    ),
    "normal_lung": ("{m}, normal", "normal {m}", "{m}: normal lungs", "{m} with no abnormality"),
}
FINDING_NAMES = {
    "normal_chest": "normal", "normal_brain": "no tumor", "normal_breast": "normal", "normal_lung": "normal",
    "benign_breast": "benign", "malignant_breast": "malignant", "benign_lung": "benign", "malignant_lung": "malignant",
    "pituitary_tumor": "pituitary tumor", "covid19": "COVID-19", "no_finding": "no finding",
    "bacterial_pneumonia": "bacterial pneumonia", "viral_pneumonia": "viral pneumonia", "sars": "SARS", "ards": "ARDS",
    "streptococcus": "streptococcal pneumonia", "pneumocystis": "Pneumocystis pneumonia",
}


@dataclass(frozen=True)
class PromptFacts:
    """What one image's metadata says. `modality`, `finding` and `view` are keys of the phrase tables above."""

    modality: str
    finding: str
    view: str | None = None
    population: str | None = None
    notes: str = ""
    captions: tuple[str, ...] = ()  # sentences the data itself carries for this image (BUSI's label captions)

    @property
    def group(self) -> str:
        """The evaluation group: "chest x-ray / viral pneumonia"."""
        return f"{MODALITY_NAMES[self.modality]} / {FINDING_NAMES.get(self.finding, self.finding.replace('_', ' '))}"


@dataclass(frozen=True)
class PromptSet:
    """How to read the facts of one image set's CSV rows.

    `columns`: CSV columns the set reads. `facts(row)`: the facts of a row (ValueError for a value the set does
    not know). `groups`: for evaluation, each group's facts and the CSV filters selecting its real images.
    """

    name: str
    description: str
    columns: tuple[str, ...]
    facts: Callable[[Mapping[str, object]], PromptFacts]
    groups: tuple[tuple[PromptFacts, dict[str, list[str]]], ...] = field(default=())


def _cell(row: Mapping[str, object], column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


def _lookup(row: Mapping[str, object], column: str, table: Mapping[str, str], set_name: str) -> str:
    value = _cell(row, column)
    key = value.lower()
    if key not in table:
        raise ValueError(
            f"prompt set {set_name!r}: {column} {value!r} is not one it describes ({sorted(table)})"
        )
    return table[key]


def _kermany(row: Mapping[str, object]) -> PromptFacts:
    label = _lookup(row, "label", {"normal": "normal", "pneumonia": "pneumonia"}, "kermany")
    if label == "normal":
        finding = "normal_chest"
    else:
        subtype = _lookup(row, "subtype", {"bacteria": "bacterial", "virus": "viral", "none": "", "": ""}, "kermany")
        finding = f"{subtype}_pneumonia" if subtype else "pneumonia"
    return PromptFacts("chest_xray", finding, view="frontal", population="pediatric")


def _busi(row: Mapping[str, object]) -> PromptFacts:
    finding = _lookup(row, "label", {"benign": "benign_breast", "malignant": "malignant_breast", "normal": "normal_breast"}, "busi")
    caption = _cell(row, "caption")
    return PromptFacts("breast_ultrasound", finding, captions=(caption,) if caption else ())


_COVID_FINDINGS = {
    "covid-19": "covid19", "sars": "sars", "streptococcus": "streptococcus", "ards": "ards",
    "pneumocystis": "pneumocystis", "no finding": "no_finding",
}
_COVID_VIEWS = {"pa": "pa", "ap": "ap", "ap supine": "ap_supine", "l": "lateral", "axial": "axial", "coronal": "coronal"}


def _covid_notes(row: Mapping[str, object]) -> PromptFacts:
    from medgen.data.text import clean_report

    modality = _lookup(row, "modality", {"x-ray": "chest_xray", "ct": "chest_ct"}, "covid_notes")
    finding = _lookup(row, "finding", _COVID_FINDINGS, "covid_notes")
    view = _COVID_VIEWS.get(_cell(row, "view").lower())  # an unknown view is left unsaid, not guessed
    notes = clean_report(_cell(row, "clinical_notes"))
    return PromptFacts(modality, finding, view=view, notes=notes)


def _lung_cxr_tb(row: Mapping[str, object]) -> PromptFacts:
    finding = _lookup(row, "label", {"normal": "normal_chest", "tuberculosis": "tuberculosis"}, "lung_cxr_tb")
    return PromptFacts("chest_xray", finding, view="frontal")


def _brain_mri(row: Mapping[str, object]) -> PromptFacts:
    table = {"glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary_tumor", "no_tumor": "normal_brain"}
    return PromptFacts("brain_mri", _lookup(row, "label", table, "brain_mri"))


def _lung_ct(row: Mapping[str, object]) -> PromptFacts:
    table = {"benign": "benign_lung", "malignant": "malignant_lung", "normal": "normal_lung"}
    return PromptFacts("chest_ct", _lookup(row, "label", table, "lung_ct"), view="axial")


PROMPT_SETS: dict[str, PromptSet] = {
    "kermany": PromptSet(
        "kermany",
        "kermany-cxr-224: pediatric frontal chest X-rays; label normal / pneumonia, subtype bacterial / viral",
        ("label", "subtype"),
        _kermany,
        (
            (PromptFacts("chest_xray", "normal_chest", "frontal", "pediatric"), {"label": ["normal"]}),
            (PromptFacts("chest_xray", "bacterial_pneumonia", "frontal", "pediatric"), {"label": ["pneumonia"], "subtype": ["bacteria"]}),
            (PromptFacts("chest_xray", "viral_pneumonia", "frontal", "pediatric"), {"label": ["pneumonia"], "subtype": ["virus"]}),
        ),
    ),
    "busi": PromptSet(
        "busi",
        "busi-ultrasound: breast ultrasound; label benign / malignant / normal, and the set's captions (templated "
        "from the label only)",
        ("label",),
        _busi,
        tuple((PromptFacts("breast_ultrasound", f"{label}_breast"), {"label": [label]}) for label in ("benign", "malignant", "normal")),
    ),
    "covid_notes": PromptSet(
        "covid_notes",
        "covid-cxr-notes: chest X-rays and CT slices; finding, view, modality and the clinical notes",
        ("finding", "modality", "view", "clinical_notes"),
        _covid_notes,
        tuple(
            (PromptFacts(modality, finding), {"finding": [name], "modality": [modality_name]})
            for modality, modality_name in (("chest_xray", "X-ray"), ("chest_ct", "CT"))
            for name, finding in (("COVID-19", "covid19"), ("SARS", "sars"), ("Streptococcus", "streptococcus"),
                                  ("ARDS", "ards"), ("Pneumocystis", "pneumocystis"), ("No Finding", "no_finding"))
        ),
    ),
    "lung_cxr_tb": PromptSet(
        "lung_cxr_tb",
        "lung-cxr-masks: frontal chest X-rays of two tuberculosis screening sets; label normal / tuberculosis",
        ("label",),
        _lung_cxr_tb,
        (
            (PromptFacts("chest_xray", "normal_chest", "frontal"), {"label": ["normal"]}),
            (PromptFacts("chest_xray", "tuberculosis", "frontal"), {"label": ["tuberculosis"]}),
        ),
    ),
    "brain_mri": PromptSet(
        "brain_mri",
        "brain-tumor-mri: brain MRI slices (mixed sequences and planes, not recorded); label glioma / meningioma / "
        "pituitary / no_tumor",
        ("label",),
        _brain_mri,
        tuple(
            (PromptFacts("brain_mri", finding), {"label": [label]})
            for label, finding in (("glioma", "glioma"), ("meningioma", "meningioma"), ("pituitary", "pituitary_tumor"),
                                   ("no_tumor", "normal_brain"))
        ),
    ),
    "lung_ct": PromptSet(
        "lung_ct",
        "lung-ct-iqothnccd: axial chest CT slices; label benign / malignant / normal",
        ("label",),
        _lung_ct,
        tuple((PromptFacts("chest_ct", f"{label}_lung", "axial"), {"label": [label]}) for label in ("benign", "malignant", "normal")),
    ),
}


def get_prompt_set(name: str) -> PromptSet:
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; the prompt sets are {sorted(PROMPT_SETS)}")
    return PROMPT_SETS[name]


def modality_phrase(facts: PromptFacts, rng: random.Random) -> str:
    """The modality, with the view and population each said or left out at random ("frontal pediatric CXR")."""
    words = [rng.choice(MODALITY_PHRASES[facts.modality])]
    if facts.view and rng.random() < 0.5:
        view = rng.choice(VIEW_PHRASES[facts.view])
        words = [f"{words[0]}, {view}"] if " " in view and rng.random() < 0.5 else [view, *words]
    if facts.population and rng.random() < 0.5:
        words.insert(0, rng.choice(POPULATION_PHRASES[facts.population]))
    return " ".join(words)


def phrase(facts: PromptFacts, rng: random.Random) -> str:
    """One phrasing of all of `facts`, drawn with `rng`."""
    base = rng.choice(FINDING_PHRASES[facts.finding]).format(m=modality_phrase(facts, rng))
    if facts.captions and rng.random() < 0.25:
        return rng.choice(facts.captions)
    if facts.notes:
        if rng.random() < 0.5:
            return f"{base}; {facts.notes}"
        # the modality first: a long note truncated to the encoder's max_length keeps it
        return f"{MODALITY_NAMES[facts.modality]}: {facts.notes}" if rng.random() < 0.5 else base
    return base


def phrasings(facts: PromptFacts, seed: int | str, count: int = PHRASINGS_PER_IMAGE) -> list[str]:
    """Up to `count` distinct phrasings of `facts`, the same for the same seed."""
    digest = hashlib.sha256(f"{PROMPTS_VERSION}\0{seed}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    found: dict[str, None] = {}
    for _ in range(count * 8):
        found.setdefault(phrase(facts, rng))
        if len(found) == count:
            break
    return list(found)


def canonical_prompt(facts: PromptFacts) -> str:
    """The first phrasing of a finding with the plain modality name: "pediatric chest x-ray, viral pneumonia"."""
    modality = MODALITY_NAMES[facts.modality]
    if facts.population:
        modality = f"{POPULATION_PHRASES[facts.population][0]} {modality}"
    return FINDING_PHRASES[facts.finding][0].format(m=modality)


def group_prompts(facts: PromptFacts, count: int = 3) -> list[str]:
    """The prompts a group is evaluated with: the canonical one, then seeded paraphrases (`count` in all)."""
    prompts = {canonical_prompt(facts): None}
    for candidate in phrasings(PromptFacts(facts.modality, facts.finding, facts.view, facts.population), "evaluation", 4 * count):
        if len(prompts) >= count:
            break
        prompts.setdefault(candidate)
    return list(prompts)


def default_sample_prompts(configs: Sequence[object]) -> list[str]:
    """One canonical prompt per group of every config's prompt set (DataConfig.prompts), in order, no repeats."""
    prompts: dict[str, None] = {}
    for config in configs:
        name = getattr(config, "prompts", None)
        if name:
            for facts, _ in get_prompt_set(name).groups:
                prompts.setdefault(canonical_prompt(facts))
    return list(prompts)


def row_prompt(set_name: str, row: Mapping[str, object], key: str) -> str:
    """The `text` of one image: its phrasings joined by `PHRASING_SEPARATOR`, seeded by `key` (its file name)."""
    prompt_set = get_prompt_set(set_name)
    missing = [column for column in prompt_set.columns if column not in row]
    if missing:
        raise ValueError(f"prompt set {set_name!r} reads column(s) {missing}, which the CSV lacks")
    return PHRASING_SEPARATOR.join(phrasings(prompt_set.facts(row), key))


def split_phrasings(text: str) -> list[str]:
    """The phrasings held in one `text` (one for ordinary text)."""
    return [part for part in text.split(PHRASING_SEPARATOR) if part.strip()] or [text]


def choose_phrasing(text: str, rng: random.Random) -> str:
    """One phrasing of `text` (ordinary text is returned as it is, without drawing)."""
    if PHRASING_SEPARATOR not in text:
        return text
    return rng.choice(split_phrasings(text))


def mentions(text: str, words: Sequence[str]) -> list[str]:
    """The `words` that occur as whole words in `text` (case-insensitive): for checks of what a prompt says."""
    return [word for word in words if re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE)]


PROMPT_LIMITS = (
    "The model knows only what these prompts contained: modality, view (where the set records it), population "
    "(Kermany: children aged 1-5), the label, the Kermany subtype, and covid-cxr-notes' clinical notes. No prompt "
    "says where a finding is, how large or how severe it is, or which side it is on (except in the clinical notes "
    "of 100-odd covid-cxr-notes images, far too few to learn such words); brain MRI prompts do not give the sequence "
    "or plane, which vary within every label. Words beyond the trained facts (\"right lower lobe\", \"large\", "
    "\"cardiomegaly\") reach the model only as far as the frozen text encoder places them near a trained phrasing, "
    "which is not reliable, and negation is learned only in the trained wordings (\"no acute findings\", \"no "
    "tumor\"). Each modality came from one or two sources, so a modality prompt also asks for that source's "
    "population, scanners and burned-in marks. The BUSI captions are the set's own sentences, templated from the "
    "label: they add wording, not information."
)


def prompt_card_section(configs: Sequence[object]) -> str:
    """The model card's "Prompts" section for a model trained on sets read with prompt sets; "" without any."""
    prompted = [config for config in configs if getattr(config, "prompts", None)]
    if not prompted:
        return ""
    lines = [
        "## Prompts",
        "",
        "Training prompts were made from what each image's metadata says (medgen.data.prompts), in several "
        f"phrasings per fact: every image carried {PHRASINGS_PER_IMAGE} seeded phrasings and training drew one each "
        "time the image was shown, so the text encoder, not one fixed string, carries the meaning.",
        "",
        "| set | prompt set | what the prompts say | groups (canonical prompt) |",
        "|---|---|---|---|",
    ]
    for config in prompted:
        prompt_set = get_prompt_set(config.prompts)
        groups = "; ".join(f"`{canonical_prompt(facts)}`" for facts, _ in prompt_set.groups)
        name = str(getattr(config, "path", "")).rstrip("/").rsplit("/", 1)[-1]
        lines.append(f"| {name} | `{prompt_set.name}` | {prompt_set.description} | {groups} |")
    facts = PromptFacts("chest_xray", "normal_chest", view="frontal")
    examples = ", ".join(f'"{prompt}"' for prompt in phrasings(facts, "card", 4))
    lines += ["", f"Paraphrases of one fact (a normal frontal chest X-ray): {examples}.", "", f"**Limits.** {PROMPT_LIMITS}"]
    return "\n".join(lines)
