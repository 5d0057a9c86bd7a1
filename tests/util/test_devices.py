"""Device names are checked against the torch build and the machine, with errors that say what to use."""

from __future__ import annotations

import pytest
import torch

from miprun.util import devices
from miprun.util.devices import resolve_device


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == devices.default_device()


def test_a_bogus_name_is_refused():
    with pytest.raises(ValueError, match=r"--device bogus: not a device; use cpu, cuda, cuda:N"):
        resolve_device("bogus")
    with pytest.raises(ValueError, match=r"--device meta: miprun computes on cpu, cuda"):
        resolve_device("meta")


def test_cuda_on_a_torch_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(ValueError, match=rf"--device cuda: this torch build has no CUDA \(torch "
                                         rf"{torch.__version__.replace('+', '[+]')}\); use --device cpu"):
        resolve_device("cuda")


def test_cuda_without_a_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=r"no CUDA GPU is visible \(CUDA_VISIBLE_DEVICES=''\); use --device cpu"):
        resolve_device("cuda")


def test_a_gpu_index_past_the_last_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"--device cuda:3: this machine has 1 CUDA GPU \(cuda:0\)"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda")
