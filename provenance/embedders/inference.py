"""Inference-only rewrites of a convolutional network that keep its outputs (to float rounding).

On a 2-core CPU, eval-mode batch norms and TensorFlow-style dynamic "same" padding cost
EfficientNet-Lite0 about a third of its forward time: every batch norm is a pass over the
activations, and every dynamic pad copies its input. Folding the norms into the
convolutions before them, and giving the strided convolutions a fixed padding for the
one input size the embedder uses, removes both.
"""

from __future__ import annotations

from typing import Any


def fold_batch_norms(module: Any) -> Any:
    """Fold each eval-mode batch norm into the convolution registered just before it, in place.

    A timm ``BatchNormAct2d`` keeps its dropout and activation; a plain batch norm becomes
    the identity. Children are paired in registration order, which is forward order in
    the convolution blocks this is meant for (timm's EfficientNet and MobileNet blocks);
    the embedder's tests compare the rewritten model's outputs with the original's.
    """
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    previous_conv: str | None = None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            previous_conv = name
        elif isinstance(child, nn.BatchNorm2d) and previous_conv is not None:
            setattr(module, previous_conv, fuse_conv_bn_eval(getattr(module, previous_conv), child))
            tail = [part for part in (getattr(child, "drop", None), getattr(child, "act", None)) if part is not None]
            setattr(module, name, nn.Sequential(*tail) if tail else nn.Identity())
            previous_conv = None
        else:
            previous_conv = None
            fold_batch_norms(child)
    return module


def static_same_padding(model: Any, example) -> Any:
    """Replace timm's dynamically padded ``Conv2dSame`` layers by plain convolutions, in place.

    TensorFlow "same" padding of a strided convolution is asymmetric (one more row and
    column at the bottom and right) when its input side is even, so it cannot be a
    convolution's own symmetric padding. A kernel one larger, with a zero first row and
    column, and padding one more, computes exactly the same sums. The padding depends
    on the input size, so it is fixed from one forward pass of ``example``, a batch of
    the only input size the model will see.
    """
    import torch
    from timm.layers.conv2d_same import Conv2dSame

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        layer.register_forward_hook(lambda layer, inputs, output, name=name: sizes.__setitem__(name, tuple(inputs[0].shape[-2:])))
        for name, layer in model.named_modules() if isinstance(layer, Conv2dSame)
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    for name, size in sizes.items():
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, _static_conv(getattr(parent, child_name), size))
    return model


def _static_conv(layer, input_size: tuple[int, int]):
    import torch
    import torch.nn as nn

    extend, padding = [], []
    for side, kernel, stride, dilation in zip(input_size, layer.kernel_size, layer.stride, layer.dilation):
        total = max((-(-side // stride) - 1) * stride + (kernel - 1) * dilation + 1 - side, 0)
        before, after = total // 2, total - total // 2
        if after != before and dilation != 1:  # a dilated kernel cannot grow by one pixel
            raise ValueError(f"cannot make padding {before, after} static at dilation {dilation}")
        extend.append(after - before)
        padding.append(after)
    kernel_size = tuple(kernel + grow for kernel, grow in zip(layer.kernel_size, extend))
    static = nn.Conv2d(layer.in_channels, layer.out_channels, kernel_size, stride=layer.stride, padding=tuple(padding),
                       dilation=layer.dilation, groups=layer.groups, bias=layer.bias is not None)
    with torch.no_grad():
        static.weight.zero_()
        static.weight[:, :, extend[0]:, extend[1]:] = layer.weight
        if layer.bias is not None:
            static.bias.copy_(layer.bias)
    return static.to(device=layer.weight.device, dtype=layer.weight.dtype)
