import subprocess
import sys

import pytest
import torch

from latprof import models
from latprof.errors import LatprofError


def test_every_torchvision_classifier_is_known_by_name():
    import torchvision.models as tvm

    names = set(tvm.list_models(module=tvm))
    assert {"mobilenet_v3_small", "regnet_x_400mf", "densenet121", "convnext_tiny"} <= names
    assert names <= set(models.MODELS)
    assert {"vgg16_cifar10", "resnet20_cifar10", "small_cifar10"} <= set(models.MODELS)
    assert len(models.MODELS) == len(names | {"vgg16_cifar10", "vgg16_cifar100", "resnet56_cifar10",
                                              "resnet56_cifar100", "resnet20_cifar10", "small_cifar10"})
    assert models.MODELS["inception_v3"].input_size == (3, 299, 299)
    assert models.MODELS["mobilenet_v3_small"].input_size == (3, 224, 224)
    assert models.MODELS["vgg16"].note == "torchvision VGG-16, ImageNet"   # curated notes are kept


def test_listing_builds_no_model(monkeypatch):
    built = []
    init = torch.nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", counting_init)
    sizes = {name: entry.input_size for name, entry in models.MODELS.items()}
    assert len(sizes) > 80 and built == []


@pytest.mark.slow
def test_own_names_load_without_importing_torchvision():
    code = ("import sys\n"
            "from latprof import models\n"
            "models.load('small_cifar10')\n"
            "assert 'torchvision' not in sys.modules, 'a CIFAR model imported torchvision'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_aliases_and_unknown_names():
    net, size = models.load("resnet56")
    assert size == (3, 32, 32) and type(net).__name__ == "ResNetCifar"
    with pytest.raises(LatprofError, match=r"did you mean mobilenet_v3_small.*latprof models"):
        models.load("mobilenet_v3_smal")


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "googlenet"])
def test_torchvision_models_build_in_eval_with_one_output(name):
    net, size = models.load(name, (3, 64, 64))
    assert not net.training and size == (3, 64, 64)
    with torch.no_grad():
        out = net(torch.zeros(1, *size))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1000)


@pytest.mark.slow
def test_inception_v3_has_no_auxiliary_head_and_takes_299():
    net, size = models.load("inception_v3")
    assert size == (3, 299, 299) and net.AuxLogits is None
    net.train()   # without aux_logits, training mode gives one output as well
    with torch.no_grad():
        assert net(torch.zeros(2, *size)).shape == (2, 1000)
