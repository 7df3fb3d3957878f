import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from thermosynth.data import DataError, folder_pairs, hituav_frames, load_pairs, manifest_pairs, roadscene_pairs
from thermosynth.data.sources import decode_pairs, llvip_pairs, load_thermal_images

from conftest import SAMPLES, scene


def test_folder_pairs_match_by_stem(paired_folder):
    Image.open(paired_folder / "thermal" / "img0.png").save(paired_folder / "thermal" / "img0.tif")
    (paired_folder / "thermal" / "img0.png").unlink()  # a different extension still pairs
    pairs = folder_pairs(paired_folder / "visible", paired_folder / "thermal")
    assert [p.visible.stem for p in pairs] == [f"img{i}" for i in range(6)]
    assert pairs[0].thermal.suffix == ".tif"
    assert load_pairs(paired_folder, split=None) == pairs


def test_bundled_roadscene_samples():
    train, test = roadscene_pairs(SAMPLES / "roadscene", "train"), roadscene_pairs(SAMPLES / "roadscene", "test")
    assert (len(train), len(test)) == (9, 3)
    assert not {p.visible.stem for p in train} & {p.visible.stem for p in test}
    for _, visible, thermal in decode_pairs(train):
        assert visible.shape[:2] == thermal.shape and visible.shape[2] == 3


def test_bundled_hituav_frames_carry_boxes_and_metadata():
    frames = hituav_frames(SAMPLES / "hit-uav", "train")
    assert len(frames) == 5
    for frame in frames:
        xml = ET.parse(SAMPLES / "hit-uav" / "Annotations" / f"{frame.path.stem}.xml").getroot()
        assert len(frame.boxes) == len(xml.findall("object"))
        assert [b.label for b in frame.boxes] == [o.find("name").text for o in xml.findall("object")]
        daylight, altitude, angle = frame.path.stem.split("_")[:3]
        assert frame.metadata == {"daylight": daylight == "1", "altitude_m": int(altitude),
                                  "camera_angle_deg": int(angle)}
    assert len(load_thermal_images(SAMPLES / "hit-uav", "train")) == 5


def test_llvip_layout(tmp_path):
    root = tmp_path / "llvip"
    for split in ("train", "test"):
        (root / "visible" / split).mkdir(parents=True)
        (root / "infrared" / split).mkdir(parents=True)
    (root / "Annotations").mkdir()
    visible, thermal = scene(16, 16, 0)
    Image.fromarray(visible).save(root / "visible" / "train" / "010001.jpg")
    Image.fromarray(thermal).save(root / "infrared" / "train" / "010001.jpg")
    (root / "Annotations" / "010001.xml").write_text(
        "<annotation><object><name>person</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>9</ymax>"
        "</bndbox></object></annotation>"
    )
    pairs = llvip_pairs(root, "train")
    assert len(pairs) == 1 and pairs[0].boxes[0].label == "person" and pairs[0].boxes[0].ymax == 9
    assert load_pairs(root, "train") == pairs
    with pytest.raises(DataError, match="name one"):
        load_pairs(root, None)


def test_manifest(tmp_path, paired_folder):
    lines = [{"visible": f"pairs/visible/img{i}.png", "thermal": f"pairs/thermal/img{i}.png", "text": f"scene {i}"}
             for i in range(3)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    pairs = manifest_pairs(manifest)
    assert [p.text for p in pairs] == ["scene 0", "scene 1", "scene 2"]
    assert load_pairs(manifest) == pairs
    manifest.write_text(json.dumps(lines[0]) + "\n{\"visible\": 3}\n")
    with pytest.raises(DataError, match=r"m\.jsonl:2"):
        manifest_pairs(manifest)


def test_visible_without_thermal_pair(paired_folder):
    (paired_folder / "thermal" / "img3.png").unlink()
    with pytest.raises(DataError, match=r"img3\.png: visible image has no thermal pair"):
        load_pairs(paired_folder)
    assert len(load_pairs(paired_folder, skip_bad=True)) == 5


def test_corrupt_image_is_named_or_skipped(paired_folder):
    (paired_folder / "thermal" / "img2.png").write_bytes(b"not a png at all")
    pairs = load_pairs(paired_folder)
    with pytest.raises(DataError, match=r"img2\.png: cannot be read"):
        decode_pairs(pairs)
    assert len(decode_pairs(pairs, skip_bad=True)) == 5


def test_mismatched_pair_sizes(paired_folder):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(paired_folder / "thermal" / "img1.png")
    with pytest.raises(DataError, match=r"img1\.png is 48x40 but its thermal pair .*img1\.png is 20x20"):
        decode_pairs(load_pairs(paired_folder))


def test_empty_folder_and_unknown_layout(tmp_path, paired_folder):
    (tmp_path / "empty" / "visible").mkdir(parents=True)
    (tmp_path / "empty" / "thermal").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_pairs(tmp_path / "empty")
    (tmp_path / "odd" / "something").mkdir(parents=True)
    with pytest.raises(DataError, match="no paired layout found"):
        load_pairs(tmp_path / "odd")
    shutil.rmtree(paired_folder / "thermal")
    with pytest.raises(DataError, match="no paired layout"):
        load_pairs(paired_folder)
