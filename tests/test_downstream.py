"""`medgen downstream`: the four arms, the count-matched control, the statistics and the report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

import helpers  # tests/helpers.py: tiny seeded pipelines (pytest puts tests/ on sys.path)
from medgen import cli
from medgen.downstream.arms import ARMS, build_arms
from medgen.downstream.classifier import Recipe
from medgen.downstream.data import LabelledImages, draw_subset
from medgen.downstream.experiment import run_downstream
from medgen.downstream.stats import paired_difference, summarize

TINY_RECIPE = Recipe(widths=(4,), steps=3, batch_size=8)


def _images(counts: dict[int, int], value: float = 0.5, side: int = 8) -> LabelledImages:
    targets = np.concatenate([np.full(count, label) for label, count in counts.items()]).astype(np.int64)
    images = np.full((len(targets), 1, side, side), value, dtype=np.float32)
    images[:, 0, 0, 0] = np.arange(len(targets)) / len(targets)  # each image distinguishable
    return LabelledImages(images, targets, ["normal", "pneumonia"], [f"real{i}" for i in range(len(targets))])


def _pool(counts=(50, 50), side: int = 8) -> list[np.ndarray]:
    return [np.full((count, 1, side, side), 0.9, dtype=np.float32) for count in counts]


def _label_counts(images: LabelledImages) -> np.ndarray:
    return np.bincount(images.targets, minlength=2)


def _is_real(images: LabelledImages, real: LabelledImages) -> np.ndarray:
    return np.array([any(np.array_equal(image, candidate) for candidate in real.images) for image in images.images])


def test_four_arms_and_the_duplicated_control_is_count_and_label_matched():
    real = _images({0: 6, 1: 14})
    arms = build_arms(real, _pool(), ratio=1.5, rng=np.random.default_rng(0))
    assert tuple(arms) == ARMS
    assert len(arms["real"]) == 20
    assert len(arms["real+synthetic"]) == len(arms["real+duplicated"]) == 20 + 30
    # same labels added in both arms: label-balanced extras, 15 + 15
    assert (_label_counts(arms["real+synthetic"]) == _label_counts(arms["real+duplicated"])).all()
    assert (_label_counts(arms["real+synthetic"]) - _label_counts(real) == [15, 15]).all()
    # the control's extra images are re-sampled real images, the other arm's are synthetic
    assert _is_real(arms["real+duplicated"], real).all()
    assert not _is_real(arms["real+synthetic"], real)[20:].any()
    # synthetic only: as many as the real subset, with its label counts, no real image
    assert (_label_counts(arms["synthetic"]) == _label_counts(real)).all()
    assert not _is_real(arms["synthetic"], real).any()


def test_rare_label_adds_images_of_that_label_only():
    real = _images({0: 6, 1: 14})
    arms = build_arms(real, _pool(), ratio=1.0, rng=np.random.default_rng(0), rare_index=0)
    for arm in ("real+synthetic", "real+duplicated"):
        assert (_label_counts(arms[arm]) - _label_counts(real) == [20, 0]).all(), arm


def test_a_subset_without_the_rare_label_cannot_be_given_a_matched_control():
    with pytest.raises(ValueError, match="holds no image of label 'normal', so the duplicated control cannot match the synthetic images' labels"):
        build_arms(_images({1: 10}), _pool(), ratio=1.0, rng=np.random.default_rng(0), rare_index=0)


def test_too_small_a_synthetic_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="synthetic images of label 'pneumonia' are needed but only 3"):
        build_arms(_images({0: 5, 1: 5}), _pool((50, 3)), ratio=1.0, rng=np.random.default_rng(0))


def test_group_draw_keeps_each_group_on_one_side():
    images = _images({0: 20, 1: 20})
    images.groups = [f"patient{i // 4}" for i in range(40)]  # 4 images per patient
    chosen = draw_subset(images, 0.3, np.random.default_rng(3))
    inside = {images.groups[i] for i in chosen}
    assert len(chosen) >= 12
    assert all(sum(g == group for g in images.groups) == sum(images.groups[i] == group for i in chosen) for group in inside)


def _t_interval(values: list[float]) -> tuple[float, float]:
    """The interval the report used to give: mean +/- t(0.975, n-1) x standard error over seeds."""
    from scipy.stats import t

    half = t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return float(np.mean(values) - half), float(np.mean(values) + half)


def _three_classifiers() -> tuple[np.ndarray, list[np.ndarray]]:
    """Test labels and the probabilities of three classifiers that disagree wildly: one predicts only
    "normal", one is perfect, one is right on half of the pneumonia images (as with 3 seeds on a small set)."""
    targets = np.array([0] * 12 + [1] * 8)
    collapsed = np.tile([0.9, 0.1], (20, 1))
    perfect = np.eye(2)[targets] * 0.8 + 0.1
    half = perfect.copy()
    half[12:16] = [0.7, 0.3]
    return targets, [collapsed, perfect, half]


def test_intervals_stay_inside_the_metric_range_where_t_intervals_did_not():
    from medgen.downstream.classifier import score_on_test
    from medgen.downstream.stats import replicate_scores, resampling_plan

    targets, classifiers = _three_classifiers()
    test = LabelledImages(np.zeros((20, 1, 4, 4), np.float32), targets, ["normal", "pneumonia"], [f"t{i}" for i in range(20)])
    plan = resampling_plan(targets, 2, 3, np.random.default_rng(0))
    scores = [score_on_test(p, test) for p in classifiers]
    replicates = [replicate_scores(p, targets, test.label_names, plan) for p in classifiers]
    sensitivity = [s["sensitivity"]["pneumonia"] for s in scores]
    assert sensitivity == [0.0, 1.0, 0.5]
    low, high = _t_interval(sensitivity)
    assert low < 0 and high > 1  # the old interval: [-0.74, 1.74]

    summary = summarize(sensitivity, np.stack([r["sensitivity"]["pneumonia"] for r in replicates], axis=1), plan)
    assert summary["mean"] == pytest.approx(0.5)
    assert 0 <= summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1] <= 1
    for metric in ("balanced_accuracy", "auroc"):
        values = [s[metric] for s in scores]
        interval = summarize(values, np.stack([r[metric] for r in replicates], axis=1), plan)["ci95"]
        assert 0 <= interval[0] <= np.mean(values) <= interval[1] <= 1, metric
    # a paired difference (collapsed minus perfect classifier, say) stays inside [-1, 1]
    first = np.stack([r["sensitivity"]["pneumonia"] for r in replicates], axis=1)
    difference = paired_difference(sensitivity, sensitivity[::-1], first, first[:, ::-1], plan)
    assert -1 <= difference["ci95"][0] <= difference["ci95"][1] <= 1
    difference = paired_difference([0.8, 0.9, None], [0.7, 0.7, 0.6])
    assert difference["values"] == pytest.approx([0.1, 0.2, None]) and difference["n_missing"] == 1


@pytest.mark.parametrize("num_labels", [2, 3])
def test_bootstrap_metrics_on_the_undrawn_test_set_equal_the_classifier_metrics(num_labels):
    from medgen.downstream.classifier import score_on_test
    from medgen.downstream.stats import ResamplingPlan, replicate_scores

    rng = np.random.default_rng(num_labels)
    targets = np.sort(rng.integers(0, num_labels, 60))
    probabilities = rng.dirichlet(np.ones(num_labels), 60).round(1)  # rounded: ties in the scores
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    names = ["normal", "pneumonia", "effusion"][:num_labels]
    counts = np.bincount(targets, minlength=num_labels)
    blocks = tuple(slice(int(start), int(start + count)) for start, count in zip(np.cumsum(counts) - counts, counts))
    identity = ResamplingPlan(np.zeros((1, 1), int), np.arange(60)[None], blocks)
    expected = score_on_test(probabilities, LabelledImages(np.zeros((60, 1, 2, 2), np.float32), targets, names, [""] * 60))
    got = replicate_scores(probabilities, targets, names, identity)
    assert got["auroc"][0] == pytest.approx(expected["auroc"])
    assert got["balanced_accuracy"][0] == pytest.approx(expected["balanced_accuracy"])
    for name in names:
        assert got["sensitivity"][name][0] == pytest.approx(expected["sensitivity"][name])


def test_interval_over_seeds_is_as_wide_as_a_t_interval_not_a_narrow_percentile_one():
    from medgen.downstream.stats import resampling_plan

    values = list(np.random.default_rng(1).normal(0.8, 0.03, 10))
    plan = resampling_plan(np.zeros(5, int), 1, 10, np.random.default_rng(0), replicates=20000)
    no_test_variation = np.tile(values, (20000, 1))
    low, high = summarize(values, no_test_variation, plan)["ci95"]
    t_low, t_high = _t_interval(values)
    # a plain 2.5-97.5% percentile interval would be 1.96 x sqrt(9/10) / 2.262 = 82% of the t-interval's width
    assert (high - low) / (t_high - t_low) == pytest.approx(1.0, abs=0.06)


def test_too_few_seeds_are_warned_about():
    from medgen.downstream.stats import seed_warnings

    assert "test-image sampling only" in seed_warnings(1)[0]
    assert "only 3 seeds" in seed_warnings(3)[0] and "--seeds 5" in seed_warnings(3)[0]
    assert seed_warnings(5) == []


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A PneumoniaMNIST-shaped npz (labels normal / pneumonia) with a learnable difference, and a tiny pipeline."""
    folder = tmp_path_factory.mktemp("downstream")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 40), ("val", 8), ("test", 24)):
        labels = np.arange(count) % 2
        images = rng.integers(0, 80, (count, 28, 28)).astype(np.uint8)
        images[labels == 1, 8:20, 8:20] += 150
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(folder / "pneumoniamnist.npz", **arrays)
    helpers.tiny_label_pipeline(labels=("normal", "pneumonia")).save_pretrained(folder / "pipe")
    return folder


def _downstream(tiny_data, output, *extra):
    argv = [
        "downstream", "--pipeline", str(tiny_data / "pipe"), "--data", str(tiny_data / "pneumoniamnist.npz"),
        "--output", str(output), "--real-fraction", "1.0", "--seeds", "2", "--synthetic-ratio", "0.5",
        "--num-inference-steps", "2", "--quick", "--max-real", "16",
    ]
    return cli.main([*argv, *map(str, extra)])


def _without_timing(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "duration_s"}


def test_cli_report_is_complete_and_a_fixed_seed_reproduces_it(tiny_data, tmp_path, capsys):
    assert _downstream(tiny_data, tmp_path / "a", "--seed", "7") == 0
    printed = capsys.readouterr()
    assert "synthetic - duplicated" in printed.out
    # 2 seeds: warned before the run and in the printed summary, which also names the interval method
    assert "warning: only 2 seeds" in printed.err
    assert "bootstrap over seeds and test images" in printed.out and "**Warning:** only 2 seeds" in printed.out
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["interval_method"]["name"].startswith("two-level bootstrap") and report["warnings"]
    assert report["n_real_train"] == 16 and report["n_real_test"] == 16
    assert [result["real_fraction"] for result in report["results"]] == [1.0]
    for result in report["results"]:
        assert set(result["arms"]) == set(ARMS)
        for arm in ARMS:
            for metric in ("auroc", "balanced_accuracy"):
                summary = result["arms"][arm][metric]
                assert len(summary["values"]) == 2
                if summary["ci95"] is not None:
                    assert 0 <= summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1] <= 1
            for summary in result["arms"][arm]["sensitivity"].values():
                assert 0 <= summary["ci95"][0] <= summary["ci95"][1] <= 1
            assert set(result["arms"][arm]["sensitivity"]) == {"normal", "pneumonia"}
        assert "auroc" in result["synthetic_minus_duplicated"]
        for summary in (result["synthetic_minus_duplicated"]["balanced_accuracy"], *result["synthetic_minus_duplicated"]["sensitivity"].values()):
            assert -1 <= summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1] <= 1
    for run in report["runs"]:
        if run["arm"] in ("real+synthetic", "real+duplicated"):
            assert run["n_train"] == run["n_real"] + round(0.5 * run["n_real"])
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<svg" in html and "real+duplicated" in html and "Classifier recipe" in html
    assert "Hesterberg" in html and "Warning:</b> only 2 seeds" in html

    assert _downstream(tiny_data, tmp_path / "b", "--seed", "7") == 0
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert _without_timing(again) == _without_timing(report)


def test_synthetic_folder_from_medgen_generate_with_a_rare_label(tiny_data, tmp_path):
    from medgen.downstream.data import data_config_values, load_split

    for label, count in (("normal", 8), ("pneumonia", 8)):
        argv = ["generate", "--pipeline", str(tiny_data / "pipe"), "--labels", label, "--count", str(count),
                "--num-inference-steps", "2", "--seed", "0", "--output", str(tmp_path / "generated" / label)]
        assert cli.main(argv) == 0
    values = data_config_values(str(tiny_data / "pneumoniamnist.npz"), None, None)
    train, test = load_split(values, "train", 16, 1, max_samples=16), load_split(values, "test", 16, 1)
    report = run_downstream(
        train, test, synthetic_folder=str(tmp_path / "generated"), real_fractions=[1.0], synthetic_ratio=0.5,
        seeds=1, rare_label="Pneumonia", recipe=TINY_RECIPE, progress=False,
    )
    runs = {run["arm"]: run for run in report["runs"]}
    assert runs["real"]["train_label_counts"] == {"normal": 8, "pneumonia": 8}
    assert runs["real+synthetic"]["train_label_counts"] == {"normal": 8, "pneumonia": 16}
    assert runs["real+duplicated"]["train_label_counts"] == {"normal": 8, "pneumonia": 16}
    assert runs["synthetic"]["train_label_counts"] == {"normal": 8, "pneumonia": 8}
    assert report["rare_label"] == "pneumonia" and report["synthetic"]["source"] == "folder"


def test_max_train_pool_and_classifier_size_are_applied_and_recorded(tiny_data, tmp_path):
    # --max-train: a seeded, label-stratified pool of the training split; the test split stays whole
    assert _downstream(tiny_data, tmp_path / "a", "--max-train", "8", "--classifier-size", "8", "--classifier-steps", "5") == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["n_train_read"] == 16 and report["n_real_train"] == 8 and report["n_real_test"] == 16
    assert report["real_train_label_counts"] == {"normal": 4, "pneumonia": 4}
    assert report["recipe"]["image_size"] == 8 and report["recipe"]["steps"] == 5
    assert "downsampled to 8 px" in report["recipe"]["input"]
    assert all(run["n_real"] == 8 for run in report["runs"])


def test_classifier_sees_area_downsampled_images():
    from medgen.downstream.classifier import _inputs

    images = _images({0: 2, 1: 2}, side=8)
    images.images[:, :, :4, :4] = 1.0  # one bright quadrant: its mean survives area downsampling exactly
    small = _inputs(images, Recipe(image_size=2))
    assert small.shape == (4, 1, 2, 2)
    assert float(small[0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-3)  # [0, 1] mapped to [-1, 1]
    assert _inputs(images, Recipe()).shape == (4, 1, 8, 8)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rare-label", "edema"], "--rare-label 'edema' is not a label of the real data"),
        (["--real-fraction", "0"], "argument --real-fraction: expected comma-separated numbers in (0, 1]"),
        (["--seeds", "0"], "argument --seeds"),
        (["--test-split", "train"], "--split 'train' and --test-split 'train' share 16 image(s)"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_data, tmp_path, capsys, extra, message):
    # argparse rejects malformed values itself (SystemExit 2); the command rejects the rest (return code 2)
    with pytest.raises(SystemExit) if extra[0] in ("--real-fraction", "--seeds") else contextlib.nullcontext():
        assert _downstream(tiny_data, tmp_path / "out", *extra) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("medgen downstream: error:") and message in error
    assert not (tmp_path / "out" / "report.json").exists()


def test_real_pneumoniamnist_subsets_never_touch_the_test_split(pneumoniamnist_npz, tmp_path):
    from medgen.downstream.data import check_disjoint, data_config_values, load_split

    values = data_config_values(str(pneumoniamnist_npz), None, None)
    train = load_split(values, "train", 16, 1, max_samples=200)
    test = load_split(values, "test", 16, 1, max_samples=100)
    check_disjoint(train, test, "train", "test")
    pool = [np.random.default_rng(label).random((200, 1, 16, 16), dtype=np.float32) for label in range(2)]
    subset = train.subset(draw_subset(train, 0.2, np.random.default_rng(0)))
    arms = build_arms(subset, pool, ratio=1.0, rng=np.random.default_rng(0))
    # stratified: each label keeps its share of the real training split
    assert (np.bincount(subset.targets, minlength=2) == np.round(0.2 * np.bincount(train.targets, minlength=2))).all()
    test_sources = set(test.sources)
    assert all(source not in test_sources for arm in ("real", "real+duplicated") for source in arms[arm].sources)
    assert all(source.startswith("pneumoniamnist.npz:train:") for source in arms["real+duplicated"].sources)


def test_result_is_stored_with_the_pipeline_and_in_its_model_card(tiny_data, tmp_path, capsys):
    import shutil

    from medgen.pipelines.model_card import write_model_card
    from medgen.pipelines.publishing import weights_sha256

    pipe = tmp_path / "pipe"
    shutil.copytree(tiny_data / "pipe", pipe)
    from medgen.pipelines import load_pipeline

    write_model_card(pipe, load_pipeline(str(pipe)), {})
    argv = [
        "downstream", "--pipeline", str(pipe), "--data", str(tiny_data / "pneumoniamnist.npz"),
        "--output", str(tmp_path / "report"), "--real-fraction", "0.5,1.0", "--seeds", "2",
        "--num-inference-steps", "2", "--max-real", "16", "--classifier-steps", "3",
    ]
    assert cli.main(argv) == 0
    assert "downstream result stored" in capsys.readouterr().err
    summary = json.loads((pipe / "downstream.json").read_text())
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert summary["weights_sha256"] == weights_sha256(pipe)
    # the folder may be shipped: it names the data relative to the working directory, the report as given
    assert report["data"] == str(tiny_data / "pneumoniamnist.npz") and not Path(summary["data"]).is_absolute()
    assert Path(summary["data"]).resolve() == (tiny_data / "pneumoniamnist.npz").resolve()
    assert [r["real_fraction"] for r in summary["results"]] == [0.5, 1.0]
    first = report["results"][0]
    assert summary["results"][0]["arms"]["real"]["auroc"]["mean"] == first["arms"]["real"]["auroc"]["mean"]
    card = (pipe / "README.md").read_text()
    assert card.count("## Downstream") == 1 and "downstream_auroc.svg" in card
    assert card.index("## Downstream") < card.index("## Intended use and limitations")
    assert (pipe / "downstream_auroc.svg").read_text().startswith("<svg")

    # a second run replaces the section in place; --quick and --no-store runs leave the folder alone
    assert cli.main([*argv, "--seed", "3"]) == 0
    assert (pipe / "README.md").read_text().count("## Downstream") == 1
    assert json.loads((pipe / "downstream.json").read_text())["seed"] == 3
    before = (pipe / "downstream.json").read_text()
    assert cli.main([*argv, "--quick"]) == 0 and cli.main([*argv, "--no-store", "--seed", "4"]) == 0
    assert (pipe / "downstream.json").read_text() == before


def test_runs_at_other_fractions_add_to_the_stored_result_of_the_same_experiment(tiny_data, tmp_path, capsys):
    import shutil

    pipe = tmp_path / "pipe"
    shutil.copytree(tiny_data / "pipe", pipe)
    argv = [
        "downstream", "--pipeline", str(pipe), "--data", str(tiny_data / "pneumoniamnist.npz"), "--seeds", "2",
        "--num-inference-steps", "2", "--max-real", "16", "--classifier-steps", "3",
    ]
    assert cli.main([*argv, "--output", str(tmp_path / "a"), "--real-fraction", "1.0"]) == 0
    first = json.loads((pipe / "downstream.json").read_text())["results"]
    capsys.readouterr()
    assert cli.main([*argv, "--output", str(tmp_path / "b"), "--real-fraction", "0.5"]) == 0
    assert "kept the stored fractions 1 of the same experiment" in capsys.readouterr().err
    summary = json.loads((pipe / "downstream.json").read_text())
    assert [result["real_fraction"] for result in summary["results"]] == summary["real_fractions"] == [0.5, 1.0]
    assert summary["results"][1] == first[0]  # the earlier fraction kept as it was measured
    assert summary["table_markdown"].count("**synthetic - duplicated**") == 2
    card = (pipe / "README.md").read_text()
    assert "- 50% of the real training images" in card and "- 100% of the real training images" in card

    # another experiment (here another seed) replaces the stored result instead of mixing with it
    assert cli.main([*argv, "--output", str(tmp_path / "c"), "--real-fraction", "0.5", "--seed", "5"]) == 0
    assert [result["real_fraction"] for result in json.loads((pipe / "downstream.json").read_text())["results"]] == [0.5]
