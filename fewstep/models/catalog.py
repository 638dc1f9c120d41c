"""Imports every built-in model module so they register themselves."""

from . import (
    cifar_fast,  # noqa: F401  (cifar_fast SNN, cifar_fast_dnn and its cifar_fast_converted SNN)
    cnn,  # noqa: F401
    dnn,  # noqa: F401  (small_cnn/vgg11/vgg16 _dnn for conversion and their _converted SNNs)
    resnet,  # noqa: F401
    scb_models,  # noqa: F401  (scb_cnn, scb_vgg: SCB + MT-LIF for event data)
    stcb_models,  # noqa: F401  (stcb_small, stcb_vgg11/16, stcb_vggsnn, stcb_resnet18/19)
    vgg,  # noqa: F401
)
