"""The engine: accumulation without aliasing, deep graphs, no_grad, debug mode."""
import numpy as np
import pytest

import minires
import minires.functions as F
from minires.autograd import accumulate


def test_a_tensor_used_three_times_gets_three():
    # Add returns (gy, gy): the same array for both inputs. An in-place `+=` on the first stored
    # gradient would change the other one too and give 4.
    x = minires.Tensor(np.array(2.0), requires_grad=True)
    ((x + x) + x).backward()
    assert x.grad == 3.0


def test_aliasing_regression_on_arrays():
    x = minires.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x + x
    z = y + x
    z.backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [3.0, 30.0])


def test_accumulate_never_writes_into_its_arguments():
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    total = accumulate(a, b)
    np.testing.assert_array_equal(total, [4.0, 6.0])
    np.testing.assert_array_equal(a, [1.0, 2.0])
    np.testing.assert_array_equal(b, [3.0, 4.0])
    assert accumulate(None, b) is b


def test_chain_of_ten_thousand_ops_backpropagates():
    x = minires.Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 10_000, rel=1e-9)


def test_backward_twice_accumulates_until_zeroed():
    W = minires.Parameter(np.array([1.0, 2.0]))
    x = np.array([3.0, 4.0])
    (W * x).sum().backward()
    (W * x).sum().backward()
    np.testing.assert_array_equal(W.grad, 2 * x)
    W.grad = None
    (W * x).sum().backward()
    np.testing.assert_array_equal(W.grad, x)


def test_diamond_graph_sums_both_paths():
    x = minires.Tensor(np.array(3.0), requires_grad=True)
    a = x * x           # da/dx = 2x
    b = x * 2.0         # db/dx = 2
    (a * b).backward()  # d(2x^3)/dx = 6x^2
    assert x.grad == pytest.approx(54.0)


def test_gradient_only_for_inputs_that_need_it():
    seen = {}

    class Probe(minires.Function):
        def forward(self, a, b):
            seen["needs"] = self.needs_input_grad
            return a * b

        def backward(self, gy):
            return gy * 2, None

    a = minires.Tensor(np.ones(2), requires_grad=True)
    b = minires.Tensor(np.ones(2))
    Probe()(a, b).sum().backward()
    assert seen["needs"] == (True, False)
    assert b.grad is None
    np.testing.assert_array_equal(a.grad, [2.0, 2.0])


def test_no_grad_records_nothing():
    W = minires.Parameter(np.ones(3))
    with minires.no_grad():
        y = W * 2.0
    assert y.creator is None and not y.requires_grad
    y2 = W * 2.0
    assert y2.creator is not None and y2.requires_grad


def test_unused_output_of_a_multi_output_function_gets_zeros():
    class Split(minires.Function):
        def forward(self, x):
            return x[:2].copy(), x[2:].copy()

        def backward(self, g1, g2):
            return np.concatenate([g1, g2])

    x = minires.Tensor(np.arange(4.0), requires_grad=True)
    first, _ = Split()(x)
    (first * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 0.0, 0.0])


def test_slicing_with_steps_backpropagates_to_the_right_places():
    x = minires.Tensor(np.zeros((2, 5)), requires_grad=True)
    x[:, ::2].sum().backward()
    np.testing.assert_array_equal(x.grad, [[1, 0, 1, 0, 1], [1, 0, 1, 0, 1]])


def test_fancy_indexing_with_repeats_adds_up():
    x = minires.Tensor(np.zeros(3), requires_grad=True)
    x[np.array([0, 0, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, 1.0])


def test_debug_mode_names_the_op_that_made_a_nan():
    x = minires.Tensor(np.array([-1.0, 4.0]), requires_grad=True)
    with minires.debug_mode():
        with pytest.raises(FloatingPointError, match="Power.forward"):
            with np.errstate(invalid="ignore"):
                x ** 0.5
    with np.errstate(invalid="ignore"):
        x ** 0.5  # outside debug mode nothing is checked


def test_debug_mode_checks_gradient_shapes():
    class BadBackward(minires.Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy.sum()  # wrong shape

    x = minires.Tensor(np.ones(3), requires_grad=True)
    with minires.debug_mode():
        y = BadBackward()(x)
        with pytest.raises(ValueError, match="BadBackward.backward gradient 0: shape"):
            y.sum().backward()


def test_backward_with_explicit_gradient_checks_shape():
    x = minires.Tensor(np.ones(3), requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(4))


def test_graph_is_freed_by_reference_counting_when_the_output_is_dropped():
    import weakref

    x = minires.Tensor(np.ones(3), requires_grad=True)
    y = F.relu(x * 2.0)
    node = weakref.ref(y.creator)
    del y
    # Outputs are held weakly by their creator: no reference cycle waits for the collector.
    assert node() is None


# -- a leaf's gradient belongs to that leaf ----------------------------------------------------

def test_changing_one_leaf_gradient_in_place_changes_no_other():
    # Add hands the same array to both inputs; the leaves must not share it, nor the caller's g.
    x = minires.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = minires.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    g = np.array([1.0, 10.0])
    (x + y).backward(g)
    x.grad *= 0.5
    np.testing.assert_array_equal(x.grad, [0.5, 5.0])
    np.testing.assert_array_equal(y.grad, [1.0, 10.0])
    np.testing.assert_array_equal(g, [1.0, 10.0])


def test_a_leaf_differentiated_directly_does_not_keep_the_callers_array():
    x = minires.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    g = np.array([3.0, 4.0])
    x.backward(g)
    x.grad *= 2
    np.testing.assert_array_equal(g, [3.0, 4.0])


def test_views_and_arrays_returned_twice_are_copied_for_leaves():
    class TwiceAndAView(minires.Function):
        def forward(self, a, b, c):
            return a + b + c

        def backward(self, gy):
            twice = gy * 2.0                       # a new array, returned for two inputs
            return twice, twice, gy.reshape(-1)[:].reshape(gy.shape)  # and a view of gy

    a, b, c = (minires.Tensor(np.ones(2), requires_grad=True) for _ in range(3))
    g = np.array([1.0, 2.0])
    TwiceAndAView()(a, b, c).backward(g)
    a.grad += 1
    c.grad += 1
    np.testing.assert_array_equal(b.grad, [2.0, 4.0])
    np.testing.assert_array_equal(g, [1.0, 2.0])


@pytest.mark.parametrize("algorithm", ["im2col", "winograd4"])
def test_fresh_gradients_from_the_kernels_are_stored_without_a_copy(algorithm, monkeypatch):
    """The private-gradient guarantee costs no copy where none is needed: a convolution's
    freshly allocated gx and gW (with Winograd: the adjoint weight transform's gW) become the
    leaves' .grad as they are."""
    from minires.kernels import cpu

    returned = {}
    for name in ("conv2d_backward", "conv2d_transform_weight_adjoint"):
        def recording(*args, original=getattr(cpu, name), name=name, **kwargs):
            returned[name] = original(*args, **kwargs)
            return returned[name]
        monkeypatch.setattr(cpu, name, recording)
    monkeypatch.setenv("MINIRES_CPU_CONV", algorithm)
    rng = np.random.default_rng(0)
    x = minires.Tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
    W = minires.Parameter(rng.standard_normal((4, 3, 3, 3)))
    F.conv2d(x, W, pad=1).backward(rng.standard_normal((2, 4, 5, 5)))
    gx, gW = returned["conv2d_backward"]
    if algorithm != "im2col":
        gW = returned["conv2d_transform_weight_adjoint"]
    assert x.grad is gx and W.grad is gW


def test_a_shared_weight_sums_into_an_array_of_its_own():
    W = minires.Parameter(np.array([1.0, 2.0]))
    x = minires.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    ((W * x) + (W * 2.0)).sum().backward()
    first = W.grad
    np.testing.assert_array_equal(first, [5.0, 6.0])
    (W * x).sum().backward()
    assert W.grad is not first  # accumulation across passes is out of place too
    np.testing.assert_array_equal(first, [5.0, 6.0])
    np.testing.assert_array_equal(W.grad, [8.0, 10.0])


def test_a_resnet_step_copies_no_parameter_gradient(monkeypatch):
    """Every gradient a ResNet's backward hands to a parameter is the kernels' own new array."""
    from minires import models
    from minires.autograd import engine

    verdicts = []
    private = engine._private
    monkeypatch.setattr(engine, "_private",
                        lambda *args: verdicts.append(private(*args)) or verdicts[-1])
    model = models.create(depth=8, share="block", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    F.softmax_cross_entropy(model(minires.Tensor(x)), rng.integers(0, 10, 4)).backward()
    assert len(verdicts) >= len(list(model.parameters())) and all(verdicts)


def test_an_observer_sees_every_function_once_in_walk_order_after_accumulation():
    # y = (x * w) * w: w is used twice; the later use is visited first.
    x = minires.Tensor(np.array(3.0))
    w = minires.Parameter(np.array(2.0))
    inner = x * w
    y = inner * w
    seen = []

    def observer(fn, gxs):
        seen.append((fn, [None if g is None else float(g) for g in gxs],
                     None if w.grad is None else float(w.grad)))

    minires.autograd.backward(y, observer=observer)
    assert [fn for fn, _, _ in seen] == [y.creator, inner.creator]
    # outer Mul: d/d(inner) = w = 2, d/dw = inner = 6; w.grad already holds 6 when observed.
    assert seen[0][1:] == ([2.0, 6.0], 6.0)
    # inner Mul: d/dx is not needed (None), d/dw = x * 2 = 6; w.grad = 6 + 6.
    assert seen[1][1:] == ([None, 6.0], 12.0)
    assert float(w.grad) == 12.0    # d(x w^2)/dw = 2 x w, by hand
