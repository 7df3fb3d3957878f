import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from thermosynth.cli import main
from thermosynth.data import DataError
from thermosynth.data.captions import aerial_captions, counted, read_metadata, street_captions
from thermosynth.data.sources import Box

from conftest import SAMPLES, SHARED_DATA, requires_shared_data

NAMES = {"Person": "person", "Car": "car", "Bicycle": "bicycle", "OtherVehicle": "othervehicle"}


def xml_counts(xml: Path) -> Counter:
    """Object counts read straight from a VOC file, independently of thermosynth's reader."""
    labels = [o.findtext("name") for o in ET.parse(xml).getroot().iter("object")]
    return Counter(NAMES[label] for label in labels if label in NAMES)


def check_against_xml(root: Path, entries: list[dict], out: Path) -> None:
    for entry in entries:
        image = (out / entry["file_name"]).resolve()
        counts = xml_counts(root / "Annotations" / f"{image.stem}.xml")
        detailed, with_counts, _ = entry["text"]
        for label, count in counts.items():
            assert counted(label, count) in with_counts and counted(label, count) in detailed, (image.name, entry)
        if not counts:
            assert "no people or vehicles" in detailed
        daylight = image.stem.split("_")[0] == "1"
        assert ("daytime" if daylight else "night-time") in detailed
        assert f"from {image.stem.split('_')[1]} m" in detailed


def test_caption_bundled_hituav_frames(tmp_path, capsys):
    out = tmp_path / "captions"
    main(["caption", str(SAMPLES / "hit-uav"), "--out", str(out)])
    assert "captions for 5 images" in capsys.readouterr().out
    entries = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    check_against_xml(SAMPLES / "hit-uav", entries, out)
    assert len(read_metadata(out)) == 5


@requires_shared_data("hit-uav")
def test_caption_all_of_hituav(tmp_path):
    root = SHARED_DATA / "hit-uav"
    main(["caption", str(root), "--out", str(tmp_path)])
    entries = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(entries) == 2898
    assert Counter(e["split"] for e in entries) == {"train": 2029, "val": 290, "test": 579}
    check_against_xml(root, entries[::97], tmp_path)  # 30 images across the set
    assert len(read_metadata(tmp_path, "test")) == 579


def test_positions_and_empty_scenes():
    boxes = [Box("Person", 10, 200, 30, 240), Box("Person", 20, 250, 40, 290), Box("Car", 500, 10, 600, 60),
             Box("DontCare", 0, 0, 5, 5)]
    detailed, with_counts, short = aerial_captions(boxes, {"daylight": False, "altitude_m": 120,
                                                           "camera_angle_deg": 60}, 640, 512)
    assert detailed == ("a night-time aerial thermal image from 120 m at a 60 degree camera angle: "
                        "two people on the left and one car at the top right")
    assert with_counts.endswith("with two people and one car")
    assert short == "night-time drone thermal image of people and cars"
    steep = aerial_captions(boxes, {"daylight": True, "altitude_m": 80, "camera_angle_deg": 80}, 640, 512)[0]
    assert steep.startswith("a daytime aerial thermal image from 80 m at an 80 degree camera angle: ")
    assert "no people or vehicles" in aerial_captions([], {"daylight": True}, 640, 512)[0]
    assert "three pedestrians" in street_captions([Box("person", 0, 0, 1, 1)] * 3)[0]


def test_caption_needs_a_known_layout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["caption", str(tmp_path)])
    assert "--vlm" in capsys.readouterr().err
    with pytest.raises(DataError, match="no metadata.jsonl"):
        read_metadata(tmp_path)
