"""The commands run without opening a connection or looking up a name (nothing here names a hub id)."""

import socket
import subprocess
import sys

import pytest

from thermosynth.cli import main

from conftest import SAMPLES


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_translate_generate_evaluate_make_no_network_calls(no_network, tmp_path):
    roadscene = str(SAMPLES / "roadscene")
    main(["translate", roadscene, "--model", "v2t-roadscene", "--steps", "1", "--out", str(tmp_path / "t")])
    main(["generate", "two cars", "--model", "t2ir-hituav", "-n", "1", "--steps", "1", "--out", str(tmp_path / "g")])
    main(["evaluate", roadscene, "--generated", str(tmp_path / "t"), "--out", str(tmp_path / "e")])
    assert no_network == []


def test_loading_pipelines_does_not_import_onnxruntime():
    """Only the ONNX face embedder needs onnxruntime (and its telemetry is not wanted); checked in a fresh process
    because the face tests import it on purpose."""
    code = ("import sys; from thermosynth.pipelines import load_pipeline, load_text_pipeline; "
            "load_pipeline('v2t-roadscene'); load_text_pipeline('t2ir-hituav'); print('onnxruntime' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
