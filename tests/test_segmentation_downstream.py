"""`medgen downstream --task segmentation`: count-matched arms of image + mask pairs, Dice with intervals, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import helpers  # tests/helpers.py: tiny seeded pipelines (pytest puts tests/ on sys.path)
from medgen import cli
from medgen.downstream.arms import ARMS
from medgen.downstream.segmentation import build_pair_arms, run_segmentation_downstream, sample_pair_pools
from medgen.segmentation.segmenter import SegmenterRecipe
from segmentation_helpers import disc_pairs, write_pair_folder

TINY = SegmenterRecipe(channels=(4, 8), steps=4, batch_size=4, image_size=None, max_shift=1)


def _pools(per_label: int = 30) -> list:
    pairs = disc_pairs(2 * per_label, seed=9)
    return [pairs.subset(np.flatnonzero(pairs.targets == k)) for k in range(2)]


def test_arms_are_count_and_label_matched_and_the_control_repeats_real_pairs():
    real = disc_pairs(10, seed=0)
    arms = build_pair_arms(real, _pools(), ratio=1.5, rng=np.random.default_rng(0))
    assert list(arms) == list(ARMS)
    assert len(arms["real"]) == 10
    assert len(arms["real+synthetic"]) == len(arms["real+duplicated"]) == 10 + 15
    assert arms["real+synthetic"].counts() == arms["real+duplicated"].counts()
    assert arms["synthetic"].counts() == real.counts()
    real_sources = set(real.sources)
    assert all(source in real_sources for source in arms["real+duplicated"].sources)
    assert not any(source in real_sources for source in arms["synthetic"].sources)
    # every pair keeps its own mask: the duplicated ones equal the real pair they copy
    for image, mask, source in zip(arms["real+duplicated"].images, arms["real+duplicated"].masks, arms["real+duplicated"].sources):
        index = real.sources.index(source)
        assert np.array_equal(image, real.images[index]) and np.array_equal(mask, real.masks[index])


def test_a_rare_label_gets_all_extra_pairs_and_too_small_a_pool_is_named():
    real = disc_pairs(10, seed=0)
    arms = build_pair_arms(real, _pools(), ratio=1.0, rng=np.random.default_rng(0), rare_index=1)
    assert arms["real+synthetic"].counts() == {"small": 5, "large": 15}
    with pytest.raises(ValueError, match="20 synthetic pairs of label 'small' are needed but only 3"):
        build_pair_arms(disc_pairs(40, seed=0), [p.subset(np.arange(3)) for p in _pools()], ratio=1.0, rng=np.random.default_rng(0))


def test_a_subset_without_a_label_cannot_be_given_a_matched_control():
    # a rare label absent from the subset: no real pair of it to duplicate, so the control cannot match the labels
    real = disc_pairs(6, seed=0).subset(np.arange(0, 6, 2))  # label "small" only
    with pytest.raises(ValueError, match="holds no pair of label 'large', so the duplicated control cannot match the synthetic pairs' labels"):
        build_pair_arms(real, _pools(), ratio=1.0, rng=np.random.default_rng(0), rare_index=1)


def test_experiment_reports_dice_with_intervals_inside_0_1_and_is_reproducible():
    train, test = disc_pairs(16, seed=0), disc_pairs(8, seed=1)
    synthetic = disc_pairs(24, seed=2)
    kwargs = dict(synthetic_pairs=synthetic, synthetic_folder="pairs", real_fractions=(0.5,), seeds=2, recipe=TINY, progress=False)
    report = run_segmentation_downstream(train, test, **kwargs)
    assert report["task"] == "segmentation" and len(report["runs"]) == 2 * len(ARMS)
    result = report["results"][0]
    for arm in ARMS:
        dice = result["arms"][arm]["dice"]
        assert 0 <= dice["mean"] <= 1 and 0 <= dice["ci95"][0] <= dice["ci95"][1] <= 1
    assert result["arms"]["real+synthetic"]["n_train"]["mean"] == result["arms"]["real+duplicated"]["n_train"]["mean"] == 16
    assert "duplicated control" in result["synthetic_minus_duplicated"]["verdict_dice"]
    again = run_segmentation_downstream(train, test, **kwargs)
    assert [run["dice"] for run in again["runs"]] == [run["dice"] for run in report["runs"]]


def test_pairs_are_sampled_from_a_mask_pipeline_with_its_mask_generator():
    from mask_helpers import tiny_mask_pipeline

    pipe = tiny_mask_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pools, records = sample_pair_pools(pipe, ["normal", "tuberculosis"], np.array([3, 0]), 0, 2, None, 2, False)
    assert len(pools[0]) == 3 and len(pools[1]) == 0
    assert pools[0].images.shape == (3, 1, 16, 16) and pools[0].masks.shape == (3, 1, 16, 16)
    assert set(np.unique(pools[0].masks)) <= {0, 1}
    assert records[0]["count"] == 3 and records[0]["seed"] != records[1]["seed"]


def test_result_is_stored_with_the_pipeline_beside_the_classification_result(tmp_path):
    from medgen.downstream.segmentation_report import SEGMENTATION
    from medgen.downstream.store import store_in_pipeline_folder
    from medgen.evaluation.report import to_jsonable

    report = to_jsonable(run_segmentation_downstream(
        disc_pairs(16, seed=0), disc_pairs(8, seed=1), synthetic_pairs=disc_pairs(24, seed=2), synthetic_folder="pairs",
        real_fractions=(0.5,), seeds=1, recipe=TINY, progress=False,
    ))
    folder = tmp_path / "pipe"
    folder.mkdir()
    classification = "<!-- medgen-downstream:start -->\n## Downstream: do these images help a classifier?\n<!-- medgen-downstream:end -->"
    (folder / "README.md").write_text(f"# A pipeline\n\n{classification}\n\n## Intended use and limitations\n\nResearch only.\n")
    line = store_in_pipeline_folder(str(folder), report, SEGMENTATION)
    assert line.startswith("segmentation downstream result stored:") and "segmentation Downstream section" in line
    summary = json.loads((folder / "downstream_segmentation.json").read_text())
    assert summary["task"] == "segmentation" and summary["interval_method"] == report["interval_method"]
    arms = summary["results"][0]["arms"]
    assert set(arms) == set(ARMS) and set(arms["real"]) == {"n_train", "dice", "dice_nonempty"}
    assert arms["real"]["dice"]["mean"] == report["results"][0]["arms"]["real"]["dice"]["mean"]
    assert summary["results"][0]["synthetic_minus_duplicated"]["verdict_dice"].startswith("undetermined")  # one seed
    assert "Dice mean [95% CI]" in summary["table_markdown"]
    assert "test Dice" in (folder / "downstream_dice.svg").read_text()
    assert not (folder / "downstream.json").exists()  # the classification result's file is not this one
    card = (folder / "README.md").read_text()
    assert classification in card  # the classification section is left as it was
    assert card.count("## Downstream: do these image + mask pairs help a segmenter?") == 1
    assert card.index("segmenter?") < card.index("## Intended use and limitations")
    assert "50% of the real training pairs: undetermined" in card and "`downstream_segmentation.json`" in card
    store_in_pipeline_folder(str(folder), report, SEGMENTATION)  # a second run replaces the section in place
    assert (folder / "README.md").read_text() == card


@pytest.fixture(scope="module")
def pair_folders(tmp_path_factory):
    """Real disc pairs with a train/test split column, a `medgen generate --pairs`-like folder, and a label pipeline."""
    root = tmp_path_factory.mktemp("segmentation_downstream")
    real = disc_pairs(24, seed=0)
    write_pair_folder(real, root / "real", split=["test" if i % 3 == 0 else "train" for i in range(len(real))])
    write_pair_folder(disc_pairs(24, seed=5), root / "pairs")
    helpers.tiny_label_pipeline(labels=("small", "large")).save_pretrained(root / "label_pipe")
    return root


def _downstream(root, output, *extra):
    argv = [
        "downstream", "--task", "segmentation", "--data", str(root / "real"), "--label-column", "label",
        "--output", str(output), "--real-fraction", "0.5,1.0", "--seeds", "2", "--quick",
    ]
    return cli.main([*argv, *map(str, extra)])


def test_cli_with_a_pairs_folder_writes_report_plot_and_table(pair_folders, tmp_path, capsys):
    assert _downstream(pair_folders, tmp_path / "out", "--synthetic", pair_folders / "pairs", "--mask-column", "mask_file_name") == 0
    printed = capsys.readouterr()
    assert "Dice mean [95% CI]" in printed.out and "synthetic - duplicated" in printed.out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["task"] == "segmentation" and report["n_real_test"] == 8 and report["n_real_train"] == 16
    assert report["mask_column"] == "mask_file_name"
    assert [r["real_fraction"] for r in report["results"]] == [0.5, 1.0]
    assert (tmp_path / "out" / "dice.svg").read_text().startswith("<svg") and "test Dice" in (tmp_path / "out" / "dice.svg").read_text()
    assert "Do the synthetic image + mask pairs help a segmenter?" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--synthetic", "PAIRS"], "--task segmentation needs the real images' masks: give --mask-column"),
        (["--pipeline", "LABEL_PIPE", "--mask-column", "mask_file_name"], "is not mask-conditioned"),
        (["--synthetic", "PAIRS", "--mask-column", "mask_file_name", "--group-column", "label"], "--group-column is not supported"),
        (["--synthetic", "PAIRS", "--mask-column", "mask_file_name", "--test-split", "train"], "share 16 pair(s)"),
    ],
)
def test_bad_input_names_the_problem(pair_folders, tmp_path, capsys, extra, message):
    extra = [{"PAIRS": str(pair_folders / "pairs"), "LABEL_PIPE": str(pair_folders / "label_pipe")}.get(a, a) for a in extra]
    assert _downstream(pair_folders, tmp_path / "out", *extra) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("medgen downstream: error:") and message in error
    assert not (tmp_path / "out" / "report.json").exists()


def test_mask_column_with_classification_is_refused(pair_folders, tmp_path, capsys):
    argv = [
        "downstream", "--synthetic", str(pair_folders / "pairs"), "--data", str(pair_folders / "real"), "--label-column",
        "label", "--mask-column", "mask_file_name", "--output", str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2
    assert "--mask-column 'mask_file_name' applies to --task segmentation" in capsys.readouterr().err
