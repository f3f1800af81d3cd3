"""Module: the base class of layers and models (parameters, sub-modules, buffers, modes).

A Module owns three kinds of named attributes, registered automatically on assignment:

* **Parameters** (``self.weight = Parameter(...)``): what the optimizer learns;
* **sub-Modules** (``self.conv1 = Conv2d(...)``): their names are joined with dots
  (``stage1.0.conv1.weight``);
* **buffers** (``self.register_buffer("running_mean", array)``): arrays that are state but not
  learned, such as BatchNorm's running statistics.

This is the second of the three places where weight sharing lives (the first is
``minires.autograd.engine.accumulate``, the third ``minires.models.resnet.BasicBlock``): one
Parameter assigned to two modules is reachable under two names, and every method that counts,
optimises or saves parameters must treat it as ONE parameter. See :meth:`Module.named_parameters`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minires.autograd import Parameter, unwrap
from minires.backend import device_of, is_array, to_device


class LoadResult(NamedTuple):
    """What :meth:`Module.load_state_dict` skipped (only non-empty when ``strict=False``)."""

    missing_keys: list
    unexpected_keys: list


class RemovableHandle:
    """Returned by :meth:`Module.register_forward_hook`; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: dict, key: int):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class Module:
    """Base class: subclasses call ``super().__init__()`` first, then assign their parts.

    ``module(x)`` calls ``forward(x)`` (and any forward hooks). ``training`` is True after
    construction; :meth:`eval` switches the whole tree to evaluation mode.
    """

    def __init__(self):
        # object.__setattr__ bypasses our own __setattr__, which needs these dicts to exist.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    # -- registration --------------------------------------------------------------------
    def _registry(self):
        try:
            return self._parameters, self._modules, self._buffers
        except AttributeError:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning parameters or modules") from None

    def __setattr__(self, name: str, value) -> None:
        params, modules, buffers = self._registry()
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            modules[name] = value
        elif name in buffers:
            if value is not None and not is_array(value):
                raise TypeError(f"buffer {name!r} must be a NumPy/CuPy array or None, got "
                                f"{type(value).__name__}")
            buffers[name] = value
        elif name in params or name in modules:
            raise TypeError(f"{name!r} is a registered "
                            f"{'Parameter' if name in params else 'Module'}; assign a "
                            f"{'Parameter' if name in params else 'Module'}, not "
                            f"{type(value).__name__} (or delete the attribute first)")
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        # Only called when ordinary lookup fails, i.e. for registered names.
        for registry in ("_parameters", "_modules", "_buffers"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if not self._forget(name):
            object.__delattr__(self, name)

    def _forget(self, name: str) -> bool:
        found = False
        for entries in self._registry():
            if name in entries:
                del entries[name]
                found = True
        if name in self.__dict__:
            object.__delattr__(self, name)
            found = True
        return found

    def register_buffer(self, name: str, array) -> None:
        """Register ``array`` (NumPy/CuPy, or None) as state that is saved but not learned."""
        if array is not None and not is_array(array):
            raise TypeError(f"buffer {name!r} must be a NumPy/CuPy array or None, got "
                            f"{type(array).__name__}")
        self._forget(name)
        self._registry()[2][name] = array

    # -- calling -------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            hook(self, args, output)
        return output

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every forward of this module.

        Used by ``minires.models.summary`` to record output shapes; ``handle.remove()`` undoes it.
        """
        key = max(self._forward_hooks, default=-1) + 1
        self._forward_hooks[key] = hook
        return RemovableHandle(self._forward_hooks, key)

    # -- walking the tree ----------------------------------------------------------------
    def named_children(self):
        """``(name, module)`` for the direct sub-modules, in assignment order."""
        yield from self._modules.items()

    def children(self):
        for _, module in self.named_children():
            yield module

    def _walk(self, prefix: str = "", path: tuple = ()):
        """Every ``(qualified name, module)`` reachable, one entry per PATH (no de-duplication).

        A module reachable twice is visited twice: that is what lets :meth:`parameter_uses`
        see every name of a shared parameter. Module trees are shallow (model -> stage ->
        block -> layer), so recursion is fine here; a module that contains itself is refused.
        """
        if id(self) in path:
            raise ValueError(f"module {prefix or type(self).__name__!r} contains itself")
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child._walk(f"{prefix}.{name}" if prefix else name,
                                       path + (id(self),))

    def named_modules(self):
        """``(name, module)`` for this module (name ``""``) and all sub-modules, each once."""
        return _first_by_identity(self._walk())

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def _all_named(self, registry: str):
        """``(qualified name, value)`` for every path to every entry of ``registry``."""
        for prefix, module in self._walk():
            for name, value in getattr(module, registry).items():
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    # -- parameters: each ONCE ------------------------------------------------------------
    def named_parameters(self):
        """``(name, Parameter)`` for every unique Parameter, in definition order.

        Weight sharing is one Parameter object assigned to two modules, so the same object is
        reachable under two names (``stage1.0.conv1.weight`` and ``stage1.0.conv2.weight``).
        Here it is yielded ONCE, under the first name it was reached by; uniqueness is by
        identity (``id``), never by value or by name. Everything that counts, optimises or
        saves parameters goes through this method, so a shared weight is counted once
        (``num_parameters``), stepped once per ``optimizer.step()`` (an optimizer given it
        twice would apply momentum and weight decay twice) and stored once (``state_dict``).
        :meth:`parameter_uses` keeps the other names for whoever needs them.
        """
        return _first_by_identity(self._all_named("_parameters"))

    def parameters(self):
        """Every unique Parameter once (see :meth:`named_parameters`)."""
        for _, param in self.named_parameters():
            yield param

    def parameter_uses(self) -> dict:
        """``{first name: [every name the parameter is reachable under]}``, one entry per
        unique Parameter, in definition order.

        An unshared parameter maps to ``[its name]``; a shared one to two or more names, first
        name first (``{"stage1.0.conv1.weight": ["stage1.0.conv1.weight",
        "stage1.0.conv2.weight"], ...}``). Used by the model summary and by checkpoints.
        """
        first_name, uses = {}, {}
        for name, param in self._all_named("_parameters"):
            key = first_name.setdefault(id(param), name)
            uses.setdefault(key, []).append(name)
        return uses

    def num_parameters(self) -> int:
        """The number of learned scalars, counting each shared Parameter once."""
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self) -> None:
        """Forget all accumulated gradients (``.grad = None``)."""
        for param in self.parameters():
            param.grad = None

    # -- buffers -------------------------------------------------------------------------
    def named_buffers(self):
        """``(name, array)`` for every unique buffer (by identity), in definition order."""
        return _first_by_identity(self._all_named("_buffers"))

    def buffers(self):
        for _, array in self.named_buffers():
            yield array

    # -- modes ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set ``training`` on this module and every sub-module; returns ``self``."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode: BatchNorm uses its running statistics, Dropout does nothing."""
        return self.train(False)

    # -- state ---------------------------------------------------------------------------
    def _state_targets(self) -> dict:
        """``{key: (owner, attribute, kind)}`` for everything ``state_dict`` holds.

        ``owner`` is the Parameter (kind ``"parameter"``) or the module holding the buffer
        (kind ``"buffer"``); a shared parameter appears once, under its first name.
        """
        targets = {name: (param, "data", "parameter") for name, param in self.named_parameters()}
        seen = set()
        for prefix, module in self._walk():
            for name, array in module._buffers.items():
                if array is not None and id(array) not in seen:
                    seen.add(id(array))
                    targets[f"{prefix}.{name}" if prefix else name] = (module, name, "buffer")
        return targets

    def state_dict(self) -> dict:
        """``{name: array copy}`` of every unique parameter (under its first name) and buffer.

        A shared weight is stored ONCE; which other names it has is in
        :meth:`parameter_uses`. Arrays stay on the model's device (NumPy or CuPy) and are copies,
        so later training does not change a saved state.
        """
        state = {}
        for key, (owner, attribute, kind) in self._state_targets().items():
            array = owner.data if kind == "parameter" else owner._buffers[attribute]
            state[key] = array.copy()
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> LoadResult:
        """Copy ``state``'s values INTO the existing parameter and buffer arrays.

        Nothing is replaced, only overwritten: a shared Parameter stays one object, so loading
        its (single) entry changes every use of it. Values may be NumPy or CuPy arrays (or
        Tensors); they are cast to each target's dtype and device.

        Raises:
            ValueError: with ``strict``, when keys are missing or unexpected (a second name of
                a shared parameter is reported as such: shared weights are stored once, under
                their first name); and whenever a value's shape differs from the model's.
                Everything is checked before anything is copied, so a failed load leaves the
                model unchanged.
        """
        targets = self._state_targets()
        missing = [key for key in targets if key not in state]
        unexpected = [key for key in state if key not in targets]
        if strict and (missing or unexpected):
            aliases = {name: names[0] for names in self.parameter_uses().values()
                       for name in names[1:]}
            notes = [f"{key} (a second name of the shared parameter {aliases[key]}, which "
                     f"is stored once under its first name)" if key in aliases else key
                     for key in unexpected]
            raise ValueError(f"load_state_dict: missing keys: {', '.join(missing) or 'none'}; "
                           f"unexpected keys: {', '.join(notes) or 'none'}")
        pairs = []
        for key, (owner, attribute, kind) in targets.items():
            if key not in state:
                continue
            target = owner.data if kind == "parameter" else owner._buffers[attribute]
            value = unwrap(state[key])
            if not hasattr(value, "shape"):
                value = np.asarray(value)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"load_state_dict: {key} has shape {tuple(value.shape)} in the "
                                 f"state, the model expects {tuple(target.shape)}")
            pairs.append((target, value))
        for target, value in pairs:
            target[...] = to_device(value, device_of(target))
        return LoadResult(missing, unexpected)

    # -- devices -------------------------------------------------------------------------
    def to(self, device: str) -> "Module":
        """Move every parameter (and gradient) and buffer to ``device`` IN PLACE; returns self.

        The Parameter objects stay the same (only their ``.data`` is replaced), so sharing
        survives the move, and an optimizer built before the move still holds the right
        objects (its momentum buffers must be moved separately).
        """
        for param in self.parameters():
            param.data = to_device(param.data, device)
            if param.grad is not None:
                param.grad = to_device(param.grad, device)
        moved = {}  # id(old array) -> new array, so a buffer registered twice stays one array
        for module in self.modules():
            for name, array in module._buffers.items():
                if array is not None:
                    if id(array) not in moved:
                        moved[id(array)] = to_device(array, device)
                    module._buffers[name] = moved[id(array)]
        return self

    # -- printing ------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of ``repr``; layers override it."""
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ")
                 for name, child in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _first_by_identity(named):
    """Yield ``(name, obj)`` from ``named`` for the first occurrence of each object only.

    Uniqueness is by identity (``id``), never by value or by name: this is where a shared
    Parameter, reachable under two names, becomes one entry.
    """
    seen = set()
    for name, obj in named:
        if id(obj) not in seen:
            seen.add(id(obj))
            yield name, obj
