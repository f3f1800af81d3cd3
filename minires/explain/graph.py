"""The graph of the shared block, as Graphviz DOT text or a PNG (``minires explain --dot/--png``).

The graph is read from the autograd graph that one forward pass records: one node per
operation (``Function``), one per leaf (the input ``x`` and each Parameter), and an edge from
whatever produced each input of an operation to that operation. Weight sharing is visible in
it: ``W`` is ONE node with two outgoing edges (to conv1 and conv2), while ``bn1`` and ``bn2``
are two separate operations with their own ``gamma`` and ``beta``. (``x`` has two outgoing
edges too: the first convolution and the shortcut.)

The PNG is drawn with matplotlib (the ``plot`` extra), no Graphviz needed: nodes are placed in
topological layers, top to bottom, the operations in one column, the shared weight to their
left and the BatchNorm parameters to their right.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

from minires.atomicfile import write_bytes, write_text
from minires.errors import MiniresError
from minires.explain.lesson import Lesson, leaf_labels, module_nodes, node_label

#: Fill colour of each kind of node, in the DOT text and in the PNG.
COLOURS = {"input": "#f4d6de", "output": "#f4d6de", "shared weight": "#f6c85f",
           "parameter": "#e4e4e4", "conv": "#cfe2f3", "batchnorm": "#d9ead3", "op": "#ffffff"}


@dataclass
class Node:
    key: str        # n0, n1, ... in forward order
    label: str      # what the node is (may span lines)
    kind: str       # a key of COLOURS


@dataclass
class Graph:
    """Nodes in forward order and ``(source key, destination key)`` edges."""

    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)

    def add(self, label: str, kind: str) -> str:
        key = f"n{len(self.nodes)}"
        self.nodes[key] = Node(key, label, kind)
        return key

    def outgoing(self, key: str) -> list:
        return [dst for src, dst in self.edges if src == key]

    def find(self, kind: str) -> list:
        return [node for node in self.nodes.values() if node.kind == kind]

    def layers(self) -> dict:
        """``{key: layer}``: operations one layer below the lowest of their inputs' producers
        (the input ``x`` is layer 0), each parameter just above its first consumer."""
        layer = {}
        for key, node in self.nodes.items():        # forward order: producers come first
            sources = [src for src, dst in self.edges if dst == key]
            producers = [layer[src] for src in sources if src in layer]
            if node.kind == "input":
                layer[key] = 0
            elif node.kind not in ("parameter", "shared weight"):
                layer[key] = 1 + max(producers, default=0)
        for key, node in self.nodes.items():
            if key not in layer:
                layer[key] = max(min(layer[dst] for dst in self.outgoing(key)) - 1, 0)
        return layer


def block_graph(lesson: Lesson) -> Graph:
    """The graph one forward pass of the lesson's block records."""
    params = leaf_labels(lesson.block)
    with module_nodes(lesson.block) as modules:
        y = lesson.forward()
    functions, stack, seen = [], [y.creator], set()
    while stack:                                     # every operation, without recursion
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        functions.append(fn)
        stack.extend(t.creator for t in fn.inputs if t.creator is not None)
    functions.sort(key=lambda fn: fn.generation)     # forward order

    graph, keys = Graph(), {}
    W = lesson.weight
    for fn in functions:
        for t in fn.inputs:
            if t.creator is None and id(t) not in keys:
                if t is W:
                    names = lesson.block.parameter_uses()["conv1.weight"]
                    label = f"W {tuple(W.shape)}, shared\n{' = '.join(names)}"
                    keys[id(t)] = graph.add(label, "shared weight")
                elif id(t) in params:
                    keys[id(t)] = graph.add(params[id(t)], "parameter")
                else:
                    keys[id(t)] = graph.add(f"x {tuple(t.shape)}\ninput", "input")
        name = modules.get(fn, "")
        kind = "conv" if name.startswith("conv") else "batchnorm" if name.startswith("bn") \
            else "op"
        keys[id(fn)] = graph.add(node_label(fn, modules).replace(": ", "\n"), kind)
        for t in fn.inputs:
            graph.edges.append((keys[id(t.creator) if t.creator is not None else id(t)],
                                keys[id(fn)]))
    graph.edges.append((keys[id(y.creator)], graph.add(f"y {tuple(y.shape)}\noutput",
                                                         "output")))
    return graph


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text of ``graph`` (render it with ``dot -Tpng block.dot -o block.png``)."""
    def quoted(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = ["// The graph of minires' shared residual block (minires explain --dot).",
             "// W is ONE node with two outgoing edges: both convolutions apply it.",
             "// bn1 and bn2 are two nodes, each with its own gamma and beta.",
             "digraph shared_block {",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for node in graph.nodes.values():
        extra = ", penwidth=2" if node.kind == "shared weight" else ""
        lines.append(f"  {node.key} [label={quoted(node.label)}, "
                     f"fillcolor={quoted(COLOURS[node.kind])}{extra}];")
    lines += [f"  {src} -> {dst};" for src, dst in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def positions(graph: Graph) -> dict:
    """``{key: (column, layer)}``: operations and the input/output in column 0, the shared
    weight at -1.5, the other parameters at 1.9, 3.2... of their layer."""
    layers, placed, taken = graph.layers(), {}, {}
    for key, node in graph.nodes.items():
        if node.kind == "shared weight":
            column = -1.5
        elif node.kind == "parameter":
            taken[layers[key]] = taken.get(layers[key], 0) + 1
            column = 0.6 + 1.3 * taken[layers[key]]
        else:
            column = 0.0
        placed[key] = (column, layers[key])
    return placed


def draw_png(graph: Graph) -> bytes:
    """The graph drawn with matplotlib, as PNG bytes; a one-line error without matplotlib."""
    try:  # here, not at the top: matplotlib is an optional dependency (minires[plot])
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MiniresError("--png needs matplotlib, which is not installed: "
                           "pip install 'minires[plot]' (or write DOT text with --dot)") from exc
    where = positions(graph)
    depth = max(layer for _, layer in where.values())
    figure = Figure(figsize=(8.5, 1.1 * depth + 2.2))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 0.94))
    axes.set_xlim(-2.6, 3.9)
    axes.set_ylim(depth + 0.6, -0.6)                 # layer 0 at the top
    axes.axis("off")
    boxes = {}
    for key, node in graph.nodes.items():
        column, layer = where[key]
        shared = node.kind == "shared weight"
        boxes[key] = axes.text(column, layer, node.label, ha="center", va="center",
                               fontsize=9, fontweight="bold" if shared else "normal",
                               bbox=dict(boxstyle="round,pad=0.45", fc=COLOURS[node.kind],
                                         ec="#b8860b" if shared else "#555555",
                                         lw=2 if shared else 1))
    for src, dst in graph.edges:
        (x0, y0), (x1, y1) = where[src], where[dst]
        start, end, bend = (0.5, 0.0), (0.5, 1.0), 0.0    # bottom of src to top of dst
        if y1 - y0 > 1 and x0 == x1:
            # The shortcut skips layers within the column: out of the right side and back in,
            # bowing around the operations between.
            start, end, bend = (1.0, 0.5), (1.0, 0.5), -0.5
        elif y1 - y0 > 1:
            bend = 0.35                                  # the shared weight's second edge
        shared = graph.nodes[src].kind == "shared weight"
        axes.annotate("", xy=end, xycoords=boxes[dst], xytext=start, textcoords=boxes[src],
                      arrowprops=dict(arrowstyle="-|>", color="#b8860b" if shared else "#333333",
                                      lw=2 if shared else 1, shrinkA=2, shrinkB=2,
                                      connectionstyle=f"arc3,rad={bend}"))
    figure.suptitle("One shared residual block: W is one node with two outgoing edges;\n"
                    "bn1 and bn2 are two BatchNorms, each with its own gamma and beta",
                    fontsize=10)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    return png.getvalue()


def write_dot(lesson: Lesson, path) -> None:
    """Write the DOT text of the lesson's block graph to ``path`` (atomically)."""
    _write(path, lambda: write_text(path, to_dot(block_graph(lesson))))


def write_png(lesson: Lesson, path) -> None:
    """Draw the lesson's block graph into the PNG file ``path`` (atomically)."""
    _write(path, lambda: write_bytes(path, draw_png(block_graph(lesson))))


def _write(path, write) -> None:
    try:
        write()
    except OSError as exc:
        raise MiniresError(f"cannot write the graph to {path}: {exc.strerror or exc}") from exc
