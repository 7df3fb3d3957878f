"""`thermosynth demo` with the shipped models: images, palette renderings and the contact sheet, no training."""

from PIL import Image

from thermosynth.cli import main
from thermosynth.demo import DEMO_PROMPTS


def test_demo_with_shipped_models_writes_images_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "outputs"
    main(["demo", "--out", str(out), "--steps", "2"])
    printed = capsys.readouterr().out
    assert "Shipped models found" in printed and "contact-sheet.html" in printed
    assert not (out / "v2t-run").exists()  # nothing trained
    assert len(list((out / "translated").glob("*.png"))) == 3
    for palette in ("white-hot", "black-hot", "ironbow"):
        assert len(list((out / "translated" / palette).glob("*.png"))) == 3
    generated = sorted((out / "generated").glob("prompt-*/0000.png"))
    assert len(generated) == len(DEMO_PROMPTS) and Image.open(generated[0]).size == (320, 256)
    page = (out / "contact-sheet.html").read_text()
    assert page.count("<img src=\"data:image/jpeg;base64,") == 3 * 5 + len(DEMO_PROMPTS) * 3
    assert "12 cars (six at the top, six at the bottom)" in page
    assert Image.open(out / "contact-sheet.png").height > 6 * 192
