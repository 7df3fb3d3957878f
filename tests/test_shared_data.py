"""Checks against the full data sets in ../shared/data; skipped on a fresh clone without them."""

from thermosynth.data import hituav_frames, roadscene_pairs
from thermosynth.data.sources import decode_pairs

from conftest import SHARED_DATA, requires_shared_data


@requires_shared_data("roadscene")
def test_roadscene_splits_are_fixed_and_disjoint():
    train, test = (roadscene_pairs(SHARED_DATA / "roadscene", split) for split in ("train", "test"))
    assert (len(train), len(test)) == (176, 45)
    assert not {p.visible.stem for p in train} & {p.visible.stem for p in test}
    assert len(decode_pairs(test)) == 45  # every test pair decodes and is pixel-aligned


@requires_shared_data("hit-uav")
def test_hituav_official_splits():
    counts = {split: len(hituav_frames(SHARED_DATA / "hit-uav", split)) for split in ("train", "val", "test")}
    assert counts == {"train": 2029, "val": 290, "test": 579}
