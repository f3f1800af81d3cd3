"""A per-layer summary of a model: output shapes, parameters, shared weights, multiply-adds.

Output shapes come from one forward pass on zeros under ``no_grad()`` in eval mode (so no
BatchNorm statistics change), recorded by a temporary forward hook on every layer.

Conventions:

* **Parameters** are counted once per unique Parameter (``Module.num_parameters``). A layer's
  ``params`` are those first reached at that layer, so the column sums to the total; a layer
  that re-uses a shared weight shows 0 there and the weight's label in ``shared``.
* **Untied parameters** count every use of a shared weight, i.e. what the same network would
  have with every convolution owning its weight. For the models in ``minires.models`` this
  equals the unshared model's count (sharing ties weights and changes nothing else); pass
  ``unshared_model`` to compare against a real one.
* **MACs** are multiply-accumulates of convolutions and linear layers per image (one MAC = one
  multiply + one add; FLOPs are about twice as many). BatchNorm, ReLU, pooling, additions and
  biases are not counted. Sharing a weight does not change the MACs: both uses compute.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from minires.autograd import Tensor, no_grad
from minires.nn import Conv2d, Linear, Module


@dataclass
class LayerRow:
    """One layer of the summary.

    Attributes:
        name: qualified name (``stage1.0.conv2``); type: class name.
        output_shape: the output's shape in the recorded forward pass (None if not called).
        params: parameters first reached at this layer (a re-used shared weight adds 0).
        params_used: parameters this layer applies, shared ones included.
        shared: ``(label, use, uses)`` for each shared weight the layer applies: the weight's
            label (``S1``), which use this is (1-based) and how many uses it has.
        macs: multiply-adds per image (convolutions and linear layers only).
    """

    name: str
    type: str
    output_shape: tuple | None
    params: int
    params_used: int
    shared: list = field(default_factory=list)
    macs: int = 0


@dataclass
class SharedWeight:
    """A Parameter reachable under two or more names.

    Attributes:
        label: short name used in the table (``S1``, ``S2``...).
        name: its first name (the state_dict key); shape, size: of the weight.
        uses: every name it is reachable under (``stage1.0.conv1.weight``, ...), first first.
    """

    label: str
    name: str
    shape: tuple
    size: int
    uses: list


@dataclass
class ModelSummary:
    """What :func:`summarize` found; ``str(summary)`` or :meth:`table` renders it."""

    title: str
    input_shape: tuple
    rows: list
    shared_weights: list
    total_params: int
    untied_params: int
    unshared_params: int
    unshared_source: str
    macs: int
    buffer_elements: int

    @property
    def reduction(self) -> int:
        """Parameters saved by sharing, against the unshared count."""
        return self.unshared_params - self.total_params

    @property
    def reduction_percent(self) -> float:
        return 100.0 * self.reduction / self.unshared_params if self.unshared_params else 0.0

    def table(self) -> str:
        """The summary as aligned text: one line per layer, the shared weights, the totals."""
        header = ("Layer", "Type", "Output shape", "Params", "Shared", "MACs")
        lines = [header]
        for row in self.rows:
            shape = "-" if row.output_shape is None else "x".join(map(str, row.output_shape[1:]))
            shared = ", ".join(f"{label} use {use}/{uses}" for label, use, uses in row.shared)
            lines.append((row.name, row.type, shape, f"{row.params:,}", shared or "-",
                          f"{row.macs:,}" if row.macs else "-"))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        right = {3, 5}
        out = [self.title, f"input {tuple(self.input_shape)}", ""]
        for j, line in enumerate(lines):
            cells = [c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(line, widths))]
            out.append("  ".join(cells).rstrip())
            if j == 0:
                out.append("  ".join("-" * w for w in widths))
        if self.shared_weights:
            out += ["", "Shared weights (one Parameter, several uses):"]
            for sw in self.shared_weights:
                out.append(f"  {sw.label}  {sw.name}  {tuple(sw.shape)}  {sw.size:,} parameters, "
                           f"used by: {', '.join(_owner(u) for u in sw.uses)}")
        uses = sum(len(sw.uses) for sw in self.shared_weights)
        source = ("unshared model" if self.unshared_source == "model"
                  else "unshared (untied) count")
        totals = [
            ("Parameters (unique)", f"{self.total_params:,}", ""),
            ("Parameters if untied", f"{self.untied_params:,}",
             "every use of a shared weight counted"),
            (source[0].upper() + source[1:], f"{self.unshared_params:,}", ""),
            ("Reduction by sharing", f"{self.reduction:,}", f"{self.reduction_percent:.2f}%"),
            ("Shared weights", f"{len(self.shared_weights):,}", f"{uses} uses"),
            ("Buffer elements", f"{self.buffer_elements:,}", "BatchNorm running statistics"),
            ("Forward MACs per image", f"{self.macs:,}",
             "multiply-adds of convolutions and linear layers; FLOPs ~ 2 x MACs"),
        ]
        label_w = max(len(t[0]) for t in totals)
        value_w = max(len(t[1]) for t in totals)
        out.append("")
        for label, value, note in totals:
            out.append(f"{label.ljust(label_w)}  {value.rjust(value_w)}"
                       + (f"  ({note})" if note else ""))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _owner(param_name: str) -> str:
    """``stage1.0.conv1.weight`` -> ``stage1.0.conv1``."""
    return param_name.rpartition(".")[0] or param_name


def _title(model: Module) -> str:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict):
        return type(model).__name__
    if spec.get("arch") == "resnet":
        return (f"ResNet-{spec['depth']} (share={spec['share']}, shortcut={spec['shortcut']}, "
                f"{spec['num_classes']} classes)")
    if spec.get("arch") == "wrn":
        return (f"WRN-{spec['depth']}-{spec['width']} (share={spec['share']}, input "
                f"{spec['input_size']}x{spec['input_size']}, {spec['num_classes']} classes)")
    return type(model).__name__


def _macs(module: Module, output_shape: tuple) -> int:
    """Multiply-adds of one call for ONE image, from the output shape."""
    if isinstance(module, Conv2d):
        _, OC, OH, OW = output_shape
        KH, KW = module.kernel_size
        return OC * OH * OW * module.in_channels * KH * KW
    if isinstance(module, Linear):
        return module.in_features * module.out_features
    return 0


def summarize(model: Module, input_shape=(1, 3, 32, 32), unshared_model: Module | None = None
              ) -> ModelSummary:
    """Describe ``model`` layer by layer.

    Args:
        model: any Module; its layers are the modules without sub-modules (plus any module
            that owns parameters directly).
        input_shape: ``(N, C, H, W)`` of the zeros run through the model to find output shapes.
        unshared_model: the same architecture without sharing, to compute the reduction against
            (otherwise the untied count is used; see the module docstring).
    Returns:
        a :class:`ModelSummary`. The model's modes, parameters and buffers are left unchanged.
    """
    params = list(model.parameters())
    if not params:
        raise ValueError("summarize needs a model with parameters")
    uses = model.parameter_uses()
    first_of = {name: names[0] for names in uses.values() for name in names}
    shared = [names for names in uses.values() if len(names) > 1]
    sizes = dict((name, p) for name, p in model.named_parameters())
    shared_weights = [SharedWeight(f"S{i + 1}", names[0], tuple(sizes[names[0]].shape),
                                   sizes[names[0]].size, list(names))
                      for i, names in enumerate(shared)]
    label_of = {sw.name: sw for sw in shared_weights}

    layers = [(name, m) for name, m in model.named_modules()
              if name and (not m._modules or m._parameters)]
    shapes = {id(m): [] for _, m in layers}
    handles = [m.register_forward_hook(
        lambda module, inputs, output: shapes[id(module)].append(tuple(output.shape)))
        for _, m in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        x = Tensor(params[0].xp.zeros(tuple(input_shape), dtype=params[0].dtype))
        with no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode

    rows = []
    for name, m in layers:
        row = LayerRow(name, type(m).__name__, shapes[id(m)][-1] if shapes[id(m)] else None,
                       0, 0, [], sum(_macs(m, s) for s in shapes[id(m)]))
        for pname, p in m._parameters.items():
            if p is None:
                continue
            full = f"{name}.{pname}"
            first = first_of[full]
            row.params_used += p.size
            if full == first:
                row.params += p.size
            if first in label_of:
                sw = label_of[first]
                row.shared.append((sw.label, sw.uses.index(full) + 1, len(sw.uses)))
        rows.append(row)

    total = model.num_parameters()
    untied = sum(sizes[names[0]].size * len(names) for names in uses.values())
    if unshared_model is not None:
        unshared, source = unshared_model.num_parameters(), "model"
    else:
        unshared, source = untied, "untied"
    return ModelSummary(
        title=_title(model), input_shape=tuple(input_shape), rows=rows,
        shared_weights=shared_weights, total_params=total, untied_params=untied,
        unshared_params=unshared, unshared_source=source,
        macs=sum(r.macs for r in rows),
        buffer_elements=int(sum(b.size for b in model.buffers())))
