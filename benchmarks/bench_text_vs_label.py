"""The built-in text model against the label-conditioned built-in of each modality, at the same N.

Issue 21's goals for `medical-text`, on held-out test splits: FID per modality within 1.3x of the label built-in
of that modality, and finding accuracy >= 0.8x the label model's label accuracy. FID depends on the number of
images, so the label model is scored here at the N the text model had on that set in its prompt-group
evaluation (`medgen evaluate --prompt-groups`, whose `prompt_groups.json` this reads), against the same test
split, with the same feature extractor and the same leaving-out of test images that are training images.
The text model's figures are read from that report; the label models are sampled and scored now.

    python benchmarks/bench_text_vs_label.py --report runs/eval/medical_text/prompt_groups.json
    python benchmarks/bench_text_vs_label.py --report ... --models chest-xray lung-ct --json runs/text_vs_label.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medgen.config import load_config
from medgen.evaluation.api import evaluate
from medgen.pipelines.hub import builtin_pipeline_path

LABEL_MODELS = ("chest-xray", "brain-mri", "breast-ultrasound", "lung-ct")
FID_GOAL = 1.3  # text FID / label FID at most
ACCURACY_GOAL = 0.8  # text finding accuracy / label accuracy at least


def label_model_figures(name: str, n: int, seed: int, cache_dir: str | None) -> dict:
    """The label built-in `name` scored on its training config's test split with `n` images."""
    config = load_config(builtin_pipeline_path(name) / "training_config.yaml")
    report = evaluate(
        pipeline=name, data=config.data, split="test", num_samples=n, seed=seed, exclude_training_overlap=True,
        frd=False, autoencoder_ceiling=False, memorization_features=False, cache_dir=cache_dir,
    )
    accuracy = report.get("label_accuracy") or {}
    return {"fid": report.get("fid"), "label_accuracy": accuracy.get("accuracy"), "n_generated": report.get("n_generated"),
            "n_real": report.get("n_real")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", required=True, help="prompt_groups.json of the text model's prompt-group evaluation")
    parser.add_argument("--models", nargs="+", default=list(LABEL_MODELS), help="label built-ins to compare with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="feature and classifier cache (default: medgen's)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    text = json.loads(Path(args.report).read_text())
    rows = []
    for name in args.models:
        set_name = Path(load_config(builtin_pipeline_path(name) / "training_config.yaml").data.path).name
        figures = (text.get("sets") or {}).get(set_name)
        if not figures or not figures.get("n_generated"):
            print(f"{name}: the report scored no {set_name} images; skipped", flush=True)
            continue
        label = label_model_figures(name, int(figures["n_generated"]), args.seed, args.cache_dir)
        rows.append({
            "model": name, "set": set_name, "n": figures["n_generated"], "n_real": figures.get("n_real"),
            "text_fid": figures.get("fid"), "label_fid": label["fid"],
            "text_finding_accuracy": figures.get("label_accuracy"), "label_accuracy": label["label_accuracy"],
        })

    def ratio(a, b):
        return None if a is None or not b else a / b

    print(f"\ntext model {text.get('pipeline')} (report {args.report}) against the label built-ins, same N, same test split")
    header = f"{'model':18}{'set':20}{'N':>5}{'FID text':>10}{'FID label':>10}{'ratio':>7}{'acc text':>10}{'acc label':>10}{'ratio':>7}"
    print(header)
    for row in rows:
        fid_ratio = ratio(row["text_fid"], row["label_fid"])
        accuracy_ratio = ratio(row["text_finding_accuracy"], row["label_accuracy"])
        row.update(fid_ratio=fid_ratio, accuracy_ratio=accuracy_ratio,
                   fid_goal_met=fid_ratio is not None and fid_ratio <= FID_GOAL,
                   accuracy_goal_met=accuracy_ratio is not None and accuracy_ratio >= ACCURACY_GOAL)

        def cell(value, width, digits=3):
            return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

        print(f"{row['model']:18}{row['set']:20}{row['n']:>5}{cell(row['text_fid'], 10, 1)}{cell(row['label_fid'], 10, 1)}"
              f"{cell(fid_ratio, 7, 2)}{cell(row['text_finding_accuracy'], 10)}{cell(row['label_accuracy'], 10)}"
              f"{cell(accuracy_ratio, 7, 2)}")
    print(f"goals: FID ratio <= {FID_GOAL}, accuracy ratio >= {ACCURACY_GOAL}")
    modality = text.get("modality") or {}
    if modality.get("label_accuracy") is not None:
        print(f"modality accuracy of the text model: {modality['label_accuracy']:.3f} (goal >= 0.95)")
    paraphrases = text.get("paraphrases") or {}
    if paraphrases.get("finding_accuracy_canonical") is not None:
        print(f"finding accuracy, canonical prompts / paraphrases: {paraphrases['finding_accuracy_canonical']:.3f} / "
              f"{paraphrases['finding_accuracy_paraphrases']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
