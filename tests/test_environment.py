import torch

import thermosynth
from thermosynth import environment


def test_describe_names_the_machine_and_versions():
    described = environment.describe()
    assert (described["torch"], described["thermosynth"]) == (torch.__version__, thermosynth.__version__)
    assert described["diffusers"]  # read from the installed metadata
    assert described["torch_threads"] == torch.get_num_threads() and described["cpus_usable"] >= 1
    assert described["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    assert environment.device_name("cpu") == described["cpu"]


def test_processor_name_reads_cpuinfo_and_falls_back(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n")
    real_path = environment.Path
    monkeypatch.setattr(environment, "Path", lambda path: cpuinfo if path == "/proc/cpuinfo" else real_path(path))
    assert environment.processor_name() == "Intel(R) Xeon(R) Gold 6338"
    cpuinfo.unlink()  # macOS, Windows: no /proc
    monkeypatch.setattr(environment.platform, "processor", lambda: "arm")
    assert environment.processor_name() == "arm"
