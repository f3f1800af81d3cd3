"""Stochastic gradient descent with momentum and weight decay, and learning-rate schedules.

:class:`SGD` follows PyTorch's update (dampening 0)::

    g   = grad + weight_decay * p          (no decay for the parameters in ``no_decay``)
    buf = momentum * buf + g               (buf starts at zero, so the first step sets buf = g)
    g   = g + momentum * buf  if nesterov  else  buf
    p  -= lr * g

Each Parameter must appear ONCE in ``params``. A weight shared by two convolutions is one
Parameter whose ``.grad`` already holds the sum of both uses' gradients (the engine adds them);
listing it twice would step it twice, with momentum and weight decay applied twice. Pass
``model.parameters()``, which yields each Parameter once; :class:`SGD` refuses duplicates.

One step is one call into the kernels of the parameters' device (``sgd_step`` of
``minires.kernels.cpu`` or ``minires.kernels.cuda``) over all the parameters that have a
gradient. Updates go into ``p.data`` and the momentum buffers in place; ``p.grad`` is never
written.
"""
from __future__ import annotations

import math

from minires import backend
from minires.autograd import Parameter

SCHEDULES = ("constant", "step", "multistep", "cosine")


def split_decay(model) -> tuple:
    """``(decay, no_decay)``: the model's unique Parameters split for weight decay.

    ``no_decay`` holds BatchNorm scales and shifts (``gamma``, ``beta``) and every bias: in
    minires these are exactly the one-dimensional parameters (convolution and linear weights
    have two or more dimensions), which keeps the optimizer independent of the layer classes.
    Both lists follow ``model.parameters()`` order, each Parameter once.
    """
    params = list(model.parameters())
    return [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]


class SGD:
    """SGD with (Nesterov) momentum and L2 weight decay, PyTorch's semantics.

    Args:
        params: Parameters (or ``(name, Parameter)`` pairs, whose names then appear in error
            messages), each exactly once, e.g. ``model.parameters()``.
        lr: learning rate; the attribute ``lr`` may be changed before any step (schedules).
            The kernels also take a one-element array on the parameters' device, read when the
            update runs (``minires.cuda_graph`` sets one while it captures a step).
        momentum: factor of the velocity buffer (0 disables it).
        weight_decay: L2 factor added to the gradient.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        no_decay: Parameters exempt from weight decay (see :func:`split_decay`).
    Raises:
        ValueError: a Parameter appears twice, or a hyper-parameter is out of range.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, no_decay=()):
        self.params, self.names = [], []
        first_index = {}
        for i, item in enumerate(params):
            name, param = item if isinstance(item, tuple) else (None, item)
            if not isinstance(param, Parameter):
                raise TypeError(f"SGD optimises Parameters; entry {i} is a "
                                f"{type(param).__name__}")
            label = name or f"parameter {i} of shape {tuple(param.shape)}"
            if id(param) in first_index:
                j = first_index[id(param)]
                raise ValueError(
                    f"SGD got the same Parameter twice: {label} is "
                    f"{self.names[j] or f'parameter {j}'} (a shared weight must be listed once, "
                    f"or it is stepped twice; pass model.parameters(), which de-duplicates)")
            first_index[id(param)] = i
            self.params.append(param)
            self.names.append(name)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.lr, self.momentum = float(lr), float(momentum)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)
        exempt = {id(p) for p in no_decay}
        unknown = exempt - set(first_index)
        if unknown:
            raise ValueError(f"no_decay lists {len(unknown)} Parameter(s) that are not in params")
        self._decays = [id(p) not in exempt for p in self.params]
        #: One velocity buffer per parameter (in ``params`` order), zero until the parameter's
        #: first step; empty without momentum.
        self.momentum_buffers = self._zero_buffers() if self.momentum else []

    def _zero_buffers(self) -> list:
        return [backend.get_array_module(p.data).zeros_like(p.data) for p in self.params]

    def zero_grad(self) -> None:
        """Forget the gradients (``.grad = None``) of every parameter."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, once."""
        stepped = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not stepped:
            return
        params = [self.params[i].data for i in stepped]
        backend.kernels_for(*params).sgd_step(
            params, [self.params[i].grad for i in stepped],
            [self.momentum_buffers[i] for i in stepped] if self.momentum else None,
            self.lr, self.momentum,
            [self.weight_decay if self._decays[i] else 0.0 for i in stepped], self.nesterov)

    def state_dict(self) -> dict:
        """Hyper-parameters and momentum buffers (keyed by index in ``params``), for resuming.

        The buffers are copies on the parameters' device.
        """
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov, "num_params": len(self.params),
                "momentum_buffers": {i: buf.copy() for i, buf in enumerate(self.momentum_buffers)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (buffers copied to each parameter's device).

        A buffer missing from the state is zero, as before a parameter's first step.

        Raises:
            ValueError: the state belongs to a different parameter list (count or shapes).
        """
        if int(state["num_params"]) != len(self.params):
            raise ValueError(f"the optimizer state is for {state['num_params']} parameters, this "
                             f"optimizer has {len(self.params)}")
        momentum = float(state["momentum"])
        buffers = self._zero_buffers() if momentum else []
        for key, buf in state["momentum_buffers"].items():
            i = int(key)
            if not 0 <= i < len(self.params) or tuple(buf.shape) != self.params[i].shape:
                raise ValueError(f"momentum buffer {key} of shape {tuple(buf.shape)} does not "
                                 f"fit parameter {i}")
            if momentum:
                buffers[i][...] = backend.to_device(buf, backend.device_of(buffers[i]))
        self.lr, self.momentum = float(state["lr"]), momentum
        self.weight_decay, self.nesterov = float(state["weight_decay"]), bool(state["nesterov"])
        self.momentum_buffers = buffers


class LRSchedule:
    """``schedule(epoch) -> lr`` for a fractional epoch (``epoch + iteration / iterations``).

    Built by :func:`make_schedule`; see there for the shapes. Pure: the same epoch always
    gives the same learning rate, so a resumed run continues exactly.
    """

    def __init__(self, name: str, base_lr: float, epochs: float, milestones=None,
                 gamma: float = 0.1, warmup_epochs: float = 0.0):
        if name not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        if base_lr < 0:
            raise ValueError(f"base_lr must be >= 0, got {base_lr}")
        if not 0 <= warmup_epochs < epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs) = [0, {epochs}), got "
                             f"{warmup_epochs}")
        if name == "step":
            if milestones:
                raise ValueError("the 'step' schedule places its milestones at 50% and 75% of "
                                 "training; use 'multistep' to choose them")
            milestones = (0.5 * epochs, 0.75 * epochs)
        elif name == "multistep":
            if not milestones:
                raise ValueError("the 'multistep' schedule needs milestones (epochs)")
            milestones = tuple(float(m) for m in milestones)
            if list(milestones) != sorted(milestones) or milestones[0] <= 0:
                raise ValueError(f"milestones must be positive and increasing, got {milestones}")
        elif milestones:
            raise ValueError(f"the {name!r} schedule takes no milestones")
        self.name, self.base_lr, self.epochs = name, float(base_lr), float(epochs)
        self.milestones = tuple(milestones or ())
        self.gamma, self.warmup_epochs = float(gamma), float(warmup_epochs)

    def __call__(self, epoch: float) -> float:
        epoch = float(epoch)
        if self.name in ("step", "multistep"):
            # At a milestone the decay has happened (epoch 50.0 of 100 is already divided).
            passed = sum(1 for m in self.milestones if epoch >= m)
            lr = self.base_lr * self.gamma ** passed
        elif self.name == "cosine":
            # The cosine runs over the epochs after the warm-up, from base_lr down to 0.
            span = self.epochs - self.warmup_epochs
            t = min(max(epoch - self.warmup_epochs, 0.0), span) / span
            lr = 0.5 * self.base_lr * (1.0 + math.cos(math.pi * t))
        else:
            lr = self.base_lr
        if epoch < self.warmup_epochs:
            lr *= max(epoch, 0.0) / self.warmup_epochs
        return lr

    def __repr__(self) -> str:
        extra = f", milestones={self.milestones}, gamma={self.gamma}" if self.milestones else ""
        return (f"LRSchedule({self.name!r}, base_lr={self.base_lr}, epochs={self.epochs}"
                f"{extra}, warmup_epochs={self.warmup_epochs})")


def make_schedule(name: str, base_lr: float, epochs: float, milestones=None, gamma: float = 0.1,
                  warmup_epochs: float = 0.0) -> LRSchedule:
    """A learning-rate schedule: a callable ``epoch (float) -> lr``.

    Args:
        name: ``"constant"``; ``"step"`` (He et al.: divide by 10, i.e. multiply by ``gamma``,
            at 50% and 75% of ``epochs``); ``"multistep"`` (multiply by ``gamma`` at each of
            ``milestones``, in epochs); ``"cosine"`` (from ``base_lr`` to 0 over the epochs
            after the warm-up).
        base_lr: the learning rate before any decay.
        epochs: the length of training.
        warmup_epochs: the schedule's value is multiplied by ``epoch / warmup_epochs`` while
            ``epoch < warmup_epochs`` (a linear ramp from 0); milestones stay absolute epochs.
    Call it with a fractional epoch, ``epoch + i / iterations_per_epoch``, before each step. At a
    milestone ``m`` the decay applies from ``epoch == m`` on.
    """
    return LRSchedule(name, base_lr, epochs, milestones, gamma, warmup_epochs)
