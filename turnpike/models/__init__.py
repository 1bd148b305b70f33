"""Example networks to bring to turnpike: torchvision's ResNet layout built without torchvision (so that
:func:`turnpike.residual_network` and ``turnpike train --model resnet18`` work on any machine), and the
models ``--model`` names (:func:`model_factory`, :func:`build_model`); :func:`load_weights` for pretrained ones."""
from ._registry import BUILT_IN_MODELS, build_model, model_factory
from ._torchvision_layout import (BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101,
                                  resnet152, resnext50_32x4d, wide_resnet50_2)
from ._weights import WeightsReport, load_weights

__all__ = ["BUILT_IN_MODELS", "BasicBlock", "Bottleneck", "ResNet", "WeightsReport", "build_model", "load_weights",
           "model_factory", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "wide_resnet50_2"]
