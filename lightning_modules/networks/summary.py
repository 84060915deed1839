"""Per-layer summary of the three networks, laid out like Tables 1-3 of the paper.

The paper reports Keras parameter counts. Keras and PyTorch count two things differently:

* BatchNorm: Keras lists its moving mean and moving variance as (non-trainable) parameters,
  4 numbers per channel in all; PyTorch keeps them as buffers, so only gamma and beta (2 per
  channel) are parameters.
* LSTM: Keras has one bias vector per gate; PyTorch's ``nn.LSTM`` has two (``bias_ih`` and
  ``bias_hh``), which add up to the same function but count ``4 * hidden_size`` more numbers per
  layer and direction.

:func:`paper_parameter_count` applies the Keras convention, :func:`torch_parameter_count` is what
PyTorch reports (trainable parameters). :func:`layer_summary` runs one forward pass on a zero
input with hooks on the layers a network names through its ``paper_layers()`` method and returns
one :class:`LayerRow` per table row; :func:`format_summary` prints the rows as a text table
(this is what ``run.py --model NAME --summary`` shows).

A network takes part through `TaggingNetwork` (``lightning_modules/networks/base.py``): its
``paper_layers()`` yields ``(display_name, module)`` pairs in forward order that together hold
every parameter of the network (a row may name a tuple of modules that run one after the other:
their parameters add up and the last one's output is the row's), and ``input_shape`` is the
shape of one example without the batch dimension.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class LayerRow:
    """One row of a per-layer summary.

    name: the layer as the paper's table names it (e.g. ``"conv 3 - 128"``).
    kind: the PyTorch module type(s) making up the row (e.g. ``"Conv1d+BatchNorm1d+ReLU"``).
    output_shape: output of the layer for one example, in the paper's layout:
        (length, channels) for 1D convolutions, (mel, time, channels) for 2D ones,
        (time, features) for LSTMs, (features,) for dense layers.
    torch_params: trainable parameters as PyTorch counts them.
    paper_params: parameters in the Keras convention the paper's tables use.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    torch_params: int
    paper_params: int


def _own_paper_params(module: nn.Module) -> int:
    """Keras-convention count of the parameters held directly by ``module`` (not children)."""
    total = 0
    for name, param in module.named_parameters(recurse=False):
        if isinstance(module, (nn.LSTM, nn.GRU)) and name.startswith("bias_hh"):
            continue  # Keras: one bias per gate (for a GRU, reset_after=False); PyTorch has two.
        total += param.numel()
    if isinstance(module, _BatchNorm) and module.track_running_stats:
        # Keras counts moving mean and moving variance as non-trainable parameters.
        total += module.running_mean.numel() + module.running_var.numel()
    return total


def paper_parameter_count(network: nn.Module) -> int:
    """Number of parameters of ``network`` in the Keras convention of the paper's tables.

    Counts every parameter (trainable or frozen), plus the running mean and variance of each
    BatchNorm layer, and leaves out ``bias_hh`` of every ``nn.LSTM`` and ``nn.GRU`` (Keras has one bias per
    gate; for a GRU that is Keras's ``reset_after=False``, the papers' version).
    """
    return sum(_own_paper_params(m) for m in network.modules())


def torch_parameter_count(network: nn.Module) -> int:
    """Number of trainable parameters of ``network``, as PyTorch reports them."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def _kind(module: nn.Module) -> str:
    """Type name(s) of a module; a Sequential lists its children joined by '+'."""
    if isinstance(module, nn.Sequential):
        return "+".join(_kind(child) for child in module)
    return type(module).__name__


def _paper_layout(module: nn.Module, output: object) -> tuple[int, ...]:
    """Shape of one example of ``output`` in the paper's (channels-last) layout.

    LSTM outputs are batch-first (batch, time, features) and keep their order, as do the outputs of
    modules that set ``sequence_output = True`` (transformer layers: (batch, tokens, features)). Every other
    tensor is PyTorch channels-first: (batch, C, L) -> (L, C), (batch, C, H, W) -> (H, W, C),
    (batch, F) -> (F,).
    """
    if isinstance(module, nn.RNNBase):
        tensor = output[0]  # (output, hidden state)
        shape = tuple(tensor.shape[1:]) if module.batch_first else (tensor.shape[0], *tensor.shape[2:])
        return tuple(int(s) for s in shape)
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"layer_summary: {type(module).__name__} returned {type(output).__name__}, "
                        "expected a tensor")
    shape = tuple(int(s) for s in output.shape[1:])
    if getattr(module, "sequence_output", False):  # (batch, tokens, features), e.g. a transformer layer
        return shape
    if len(shape) >= 2:
        return (*shape[1:], shape[0])
    return shape


def _lstm_layer_params(lstm: nn.LSTM | nn.GRU, layer: int) -> tuple[list[nn.Parameter], int]:
    """Parameters of one layer (both directions) of a multi-layer LSTM and their Keras count."""
    params: list[nn.Parameter] = []
    paper = 0
    for name, param in lstm.named_parameters(recurse=False):
        stem = name.removesuffix("_reverse")
        if not stem.endswith(f"_l{layer}"):
            continue
        params.append(param)
        if not name.startswith("bias_hh"):
            paper += param.numel()
    return params, paper


def layer_summary(network: nn.Module, input_shape: Sequence[int] | None = None) -> list[LayerRow]:
    """Rows of the network's paper table, from one forward pass on a (1, *input_shape) zero input.

    ``input_shape`` defaults to ``network.input_shape``. The network is run in eval mode under
    ``torch.no_grad()`` on its own device and dtype; its training flag is restored afterwards.
    A multi-layer ``nn.LSTM`` is split into one row per layer (each layer's output has the
    shape of the whole module's output). Raises RuntimeError if the named layers do not hold
    every parameter of the network exactly once, or if a named layer is not run exactly once.
    """
    if input_shape is None:
        input_shape = network.input_shape
    layers = [(name, tuple(modules) if isinstance(modules, (tuple, list)) else (modules,))
              for name, modules in network.paper_layers()]
    outputs: dict[tuple[int, int], object] = {}
    calls: dict[tuple[int, int], int] = {}

    def make_hook(index: tuple[int, int]):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            calls[index] = calls.get(index, 0) + 1
            outputs[index] = output
        return hook

    first = next(network.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    handles = [module.register_forward_hook(make_hook((i, j)))
               for i, (_, modules) in enumerate(layers) for j, module in enumerate(modules)]
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()

    rows: list[LayerRow] = []
    covered: list[nn.Parameter] = []
    for index, (name, modules) in enumerate(layers):
        for part, module in enumerate(modules):
            if calls.get((index, part), 0) != 1:
                raise RuntimeError(f"layer_summary: layer {name!r} ({_kind(module)}) ran "
                                   f"{calls.get((index, part), 0)} times in one forward pass, expected once")
        module = modules[-1]
        shape = _paper_layout(module, outputs[(index, len(modules) - 1)])
        if len(modules) > 1:
            covered.extend(p for m in modules for p in m.parameters())
            rows.append(LayerRow(name=name, kind="+".join(_kind(m) for m in modules), output_shape=shape,
                                 torch_params=sum(torch_parameter_count(m) for m in modules),
                                 paper_params=sum(paper_parameter_count(m) for m in modules)))
            continue
        if isinstance(module, (nn.LSTM, nn.GRU)) and module.num_layers > 1:
            for layer in range(module.num_layers):
                params, paper = _lstm_layer_params(module, layer)
                covered.extend(params)
                rows.append(LayerRow(
                    name=f"{name} (layer {layer + 1}/{module.num_layers})", kind=_kind(module),
                    output_shape=shape,
                    torch_params=sum(p.numel() for p in params if p.requires_grad),
                    paper_params=paper))
            continue
        covered.extend(module.parameters())
        rows.append(LayerRow(name=name, kind=_kind(module), output_shape=shape,
                             torch_params=torch_parameter_count(module),
                             paper_params=paper_parameter_count(module)))

    covered_ids = [id(p) for p in covered]
    all_ids = {id(p) for p in network.parameters()}
    if len(covered_ids) != len(set(covered_ids)) or set(covered_ids) != all_ids:
        raise RuntimeError(
            f"layer_summary: paper_layers() of {type(network).__name__} must hold every "
            f"parameter exactly once ({len(all_ids)} parameter tensors in the network, "
            f"{len(set(covered_ids))} distinct in the listed layers, {len(covered_ids)} listed)")
    return rows


def _format_count(value: int, has_params: bool) -> str:
    return f"{value:,}" if has_params else "-"


def format_summary(rows: Iterable[LayerRow], title: str) -> str:
    """Text table of ``rows`` like the paper's: layer, output, # params (PyTorch), # params (paper).

    Output shapes are written as in the paper (``155328x128``); layers without parameters show
    ``-``. The last line holds the totals of both counts.
    """
    rows = list(rows)
    header = ("layer", "output", "# params (PyTorch)", "# params (paper/Keras)")
    body = [
        (row.name, "x".join(str(s) for s in row.output_shape),
         _format_count(row.torch_params, row.torch_params or row.paper_params),
         _format_count(row.paper_params, row.torch_params or row.paper_params))
        for row in rows
    ]
    total = ("Total params", "",
             f"{sum(r.torch_params for r in rows):,}", f"{sum(r.paper_params for r in rows):,}")
    table = [header, *body, total]
    widths = [max(len(line[col]) for line in table) for col in range(4)]

    def render(line: tuple[str, str, str, str]) -> str:
        return "  ".join([line[0].ljust(widths[0]), line[1].ljust(widths[1]),
                          line[2].rjust(widths[2]), line[3].rjust(widths[3])]).rstrip()

    rule = "-" * len(render(header))
    return "\n".join([title, rule, render(header), rule, *(render(b) for b in body), rule,
                      render(total)])
