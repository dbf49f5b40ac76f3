"""Does an exported detector fit a microcontroller? The flash and the activation RAM an MCU runtime
(TFLite Micro, STM32Cube.AI) would need for an ONNX model, and a verdict against named parts.

Flash is what the runtime stores: the weights in their stored type (for the int8 QDQ model of
``quantize.py``, each weight once, as int8, its bias as int32), the quantisation parameters, any
fp32 tensors left, and the graph description, estimated as the serialized model less those tensors.

RAM is the activation arena. The QDQ pairs are folded as a runtime folds them: an int8 kernel
reads and writes its activations in their quantized type (1 byte an element) and the model input
is fed already quantized; only the fp32 output tail keeps 4-byte tensors, behind a real
dequantize. Constants (weights, and shape arithmetic, which static shapes turn into constants)
live in flash. Every activation is alive from the op that writes it (the input: from the start)
to the last op that reads it (the outputs: to the end); the live bytes at an op count its inputs
and its outputs. The peak of live bytes depends on the execution order, so the order is searched:
the graph's own, two greedy schedulers and, within a budget of states, an exact search. Element-
wise ops may write into an input that dies there (``inplace``). The arena is then planned as TFLite
Micro's greedy planner does (largest buffer first, each at the lowest offset free for its
lifetime, sizes rounded up to 16 bytes), which can leave gaps: the planned arena is the figure to
compare with a part's RAM. The best of a few other placement orders is given beside it, as what
an offline plan could reach.

Not counted: the runtime's code and its own scratch buffers (im2col and the like, which depend on
the kernels), the stack and the application's buffers. All sizes are in bytes here; reports give
KiB (1024 bytes), the unit of ST's datasheets ("Kbytes").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import onnx
from google.protobuf.message import DecodeError
from onnx import helper

KIB = 1024
# TFLite Micro rounds every planned buffer up to this many bytes (MicroArenaBufferAlignment()).
ARENA_ALIGNMENT = 16
# States the exact order search may visit before the greedy result is kept instead.
DEFAULT_SEARCH_STATES = 200_000

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# Ops whose output can overwrite an input that dies there (same bytes): element-wise ops, and
# views that only relabel a buffer's shape (TFLite Micro's RESHAPE skips its copy when input and
# output share a buffer).
INPLACE_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Clip", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
                 "PRelu", "Neg", "Abs", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
INPLACE_BINARY = {"Add", "Sub", "Mul"}
# Shapes are static, so these outputs are known before the model runs: constants.
SHAPE_OPS = {"Shape", "Size"}


@dataclass(frozen=True)
class McuTarget:
    """A part: its flash, its total RAM and its largest contiguous SRAM block, in KiB. A runtime's
    arena must normally fit one contiguous block; ``source`` says where the figures come from."""

    name: str
    flash_kib: float
    ram_kib: float
    largest_region_kib: float
    source: str = "given on the command line"


TARGETS = (
    # ST RM0433 (STM32H742/743/753/750 reference manual) and the Linux kernel's STM32H743 overview
    # (written at ST): 2 MB flash, 1 MB RAM. The RAM is split: DTCM 128 KB at 0x2000_0000, AXI SRAM
    # 512 KB at 0x2400_0000, SRAM1-3 128 + 128 + 32 KB at 0x3000_0000, SRAM4 64 KB, ITCM 64 KB
    # (memory map as in stm32-rs/stm32h7xx-hal memory.x); the AXI SRAM is the largest block.
    McuTarget("STM32H743", 2048, 1024, 512, "RM0433; kernel stm32h743-overview; AXI SRAM 512 KB"),
    # ST RM0399 (STM32H745/755/747/757), as cited by the memory map of antoinevg/nucleo-h7xx:
    # flash in two banks of 1 MB, AXI SRAM 512 KB in the Cortex-M7's D1 domain, the same SRAM blocks
    # as the H743. The Cortex-M7 side gets all 2 MB only if the Cortex-M4 runs nothing from bank 2.
    McuTarget("STM32H747 (Cortex-M7)", 2048, 1024, 512, "RM0399 memory map; AXI SRAM 512 KB"),
    # ST RM0410 (STM32F76x/77x), system architecture figure: flash 2 MB, DTCM 128 KB, SRAM1 368 KB,
    # SRAM2 16 KB (512 KB of data RAM) and ITCM 16 KB. SRAM1 is the largest physical block. Not
    # confirmed here: whether DTCM, SRAM1 and SRAM2 sit back to back in the address map (many
    # linker scripts declare one 512K RAM at 0x2000_0000), which would let an arena span them.
    McuTarget("STM32F767", 2048, 512, 368, "RM0410 architecture figure; SRAM1 368 KB"),
)


def parse_target(text: str) -> McuTarget:
    """A target written ``NAME:FLASH_KIB:RAM_KIB[:LARGEST_REGION_KIB]`` (the largest region
    defaults to the whole RAM, for a part whose RAM is one block)."""
    parts = text.split(":")
    form = "expected NAME:FLASH_KIB:RAM_KIB[:LARGEST_REGION_KIB], e.g. MYMCU:1024:320:256"
    if len(parts) not in (3, 4) or not parts[0]:
        raise ValueError(f"--target {text!r}: {form}")
    try:
        sizes = [float(part) for part in parts[1:]]
    except ValueError:
        raise ValueError(f"--target {text!r}: sizes must be numbers of KiB; {form}") from None
    if any(size <= 0 or not math.isfinite(size) for size in sizes):
        raise ValueError(f"--target {text!r}: sizes must be positive KiB")
    flash, ram, largest = sizes[0], sizes[1], sizes[2] if len(sizes) == 3 else sizes[1]
    if largest > ram:
        raise ValueError(f"--target {text!r}: the largest region ({largest:g} KiB) exceeds the RAM ({ram:g} KiB)")
    return McuTarget(parts[0], flash, ram, largest)


def load_model(path: str | Path) -> onnx.ModelProto:
    """The ONNX model at ``path`` (parsed, never run), or an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not an ONNX model ({err})") from None
    # Protobuf parses many non-ONNX files into an empty message rather than failing.
    if not model.graph.node or not model.graph.input:
        raise ValueError(f"{path}: not an ONNX model (no graph nodes or inputs)")
    return model


def element_bytes(data_type: int) -> int:
    return helper.tensor_dtype_to_np_dtype(data_type).itemsize


def _stored_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and the values of Constant nodes, by name."""
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tensors[node.output[0]] = value
    return tensors


# ------------------------------------------------------------------------------------------ flash
@dataclass(frozen=True)
class FlashBytes:
    """What an MCU runtime stores in flash, in bytes."""

    int8_weights: int      # 8-bit tensors behind a DequantizeLinear: the quantized weights
    int32_biases: int      # 32-bit integer tensors behind a DequantizeLinear: the quantized biases
    quant_params: int      # scales and zero points of every Quantize/DequantizeLinear
    float_weights: int     # fp32 tensors left: an fp32 model's weights, excluded layers, small constants
    graph_estimate: int    # the serialized model less the tensors above: ops, names, shape constants

    @property
    def tensors(self) -> int:
        """Everything but the graph description: the part of the total that is not an estimate."""
        return self.int8_weights + self.int32_biases + self.quant_params + self.float_weights

    @property
    def total(self) -> int:
        return self.tensors + self.graph_estimate

    def as_dict(self) -> dict[str, int]:
        return {"int8_weights": self.int8_weights, "int32_biases": self.int32_biases,
                "quant_params": self.quant_params, "float_weights": self.float_weights,
                "graph_estimate": self.graph_estimate, "total": self.total, "tensors": self.tensors}


def flash_bytes(model: onnx.ModelProto) -> FlashBytes:
    """The flash split of ``model``, each stored tensor counted once, by its role: input 0 of a
    DequantizeLinear is a quantized weight (8-bit) or bias (32-bit); inputs 1 and 2 of a Quantize
    or DequantizeLinear are quantisation parameters; floats used elsewhere are fp32 weights; the
    rest (int64 shapes, axes) is part of the graph description."""
    stored = _stored_tensors(model)
    role: dict[str, str] = {}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            if name not in stored:
                continue
            bits = 8 * element_bytes(stored[name].data_type)
            if node.op_type in (QUANTIZE, DEQUANTIZE) and slot > 0:
                role[name] = "quant_params"
            elif node.op_type == DEQUANTIZE and bits == 8:
                role[name] = "int8_weights"
            elif node.op_type == DEQUANTIZE and bits == 32:
                role[name] = "int32_biases"
            elif stored[name].data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                role.setdefault(name, "float_weights")
    totals = dict.fromkeys(("int8_weights", "int32_biases", "quant_params", "float_weights"), 0)
    for name, kind in role.items():
        tensor = stored[name]
        totals[kind] += math.prod(tensor.dims) * element_bytes(tensor.data_type)
    return FlashBytes(**totals, graph_estimate=max(0, model.ByteSize() - sum(totals.values())))


# ------------------------------------------------------------------------------- the folded graph
@dataclass(frozen=True)
class Activation:
    """A tensor the arena holds: its storage shape, type and bytes, and the op that writes it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    producer: str


@dataclass(frozen=True)
class McuOp:
    """One kernel the runtime runs, with the activations it reads and writes (constants left out);
    ``quantized``: an int8 kernel, folded from its QDQ pairs."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    quantized: bool = False


@dataclass
class McuGraph:
    """The graph as an MCU runtime runs it: ``ops`` in the model's (topological) order."""

    ops: list[McuOp]
    tensors: dict[str, Activation]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def with_static_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the shape of every tensor inferred. onnxruntime's symbolic inference is
    tried first: it follows the shape arithmetic (Shape, Gather, Slice) of PyTorch exports, which
    onnx's own inference leaves unknown."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        return SymbolicShapeInference.infer_shapes(model)
    except Exception:  # it raises plain Exceptions on ops it does not know: fall back to onnx's
        return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _constant_names(model: onnx.ModelProto) -> set[str]:
    """Stored tensors and everything computed from them alone, or from static shapes."""
    constants = set(_stored_tensors(model)) | {""}  # "" is an omitted optional input
    for node in model.graph.node:
        if node.op_type in SHAPE_OPS or all(name in constants for name in node.input):
            constants.update(node.output)
    return constants


class _Aliases:
    """Tensors that share one buffer (folded QDQ pairs), each class named by its earliest tensor."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def root(self, name: str) -> str:
        while name in self.parent:
            name = self.parent[name]
        return name

    def join(self, later: str, earlier: str) -> None:
        later, earlier = self.root(later), self.root(earlier)
        if later != earlier:
            self.parent[later] = earlier


def mcu_graph(model: onnx.ModelProto) -> McuGraph:
    """``model`` as an MCU runtime runs it. An op runs as an int8 kernel when each activation it
    reads comes from a DequantizeLinear and each output goes only to QuantizeLinear nodes; its
    QDQ pairs then fold away and its activations keep their quantized type. A DequantizeLinear that
    feeds an fp32 op stays (a dequantize writing a 4-byte tensor), as does a QuantizeLinear of an
    fp32 op's output. A model input read only by QuantizeLinear is fed already quantized."""
    model = with_static_shapes(model)
    index = _NodeIndex(model)
    aliases, folded = index.fold_qdq()
    storage = _storage_types(model, aliases)
    ops, tensors = [], {}
    for node in index.nodes:
        if id(node) in folded:
            continue
        reads = [name for name in node.input if name not in index.constants]
        if index.runs_int8(node):  # an int8 kernel reads the quantized tensor, even where the DQ stays
            reads = [index.producer[name].input[0] for name in reads]
        op = McuOp(node.name or f"{node.op_type}_{len(ops)}", node.op_type,
                   tuple(dict.fromkeys(aliases.root(name) for name in reads)),
                   tuple(aliases.root(name) for name in node.output), quantized=index.runs_int8(node))
        ops.append(op)
        for name in op.outputs:
            tensors[name] = _activation(name, storage, op.name)
    inputs = tuple(dict.fromkeys(aliases.root(name) for name in index.inputs))
    for name in inputs:
        tensors[name] = _activation(name, storage, "(model input)")
    return McuGraph(ops, tensors, inputs, tuple(aliases.root(o.name) for o in model.graph.output))


class _NodeIndex:
    """The nodes that compute on activations (not on constants alone), who writes and who reads
    each activation, and which nodes run as int8 kernels."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.constants = _constant_names(model)
        self.nodes = [node for node in model.graph.node if not all(out in self.constants for out in node.output)]
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.input):
                if name not in self.constants:
                    self.consumers.setdefault(name, []).append(node)
        self.inputs = [i.name for i in model.graph.input if i.name not in self.constants]
        self.outputs = {o.name for o in model.graph.output}
        self.int8_kernels = {id(node) for node in self.nodes if self._is_int8_kernel(node)}

    def _is_int8_kernel(self, node: onnx.NodeProto) -> bool:
        if node.op_type in (QUANTIZE, DEQUANTIZE):
            return False
        reads = [name for name in node.input if name not in self.constants]
        dequantized = all(name in self.producer and self.producer[name].op_type == DEQUANTIZE for name in reads)
        quantized = all(out not in self.outputs and self.consumers.get(out)
                        and all(c.op_type == QUANTIZE for c in self.consumers[out]) for out in node.output)
        return bool(reads) and dequantized and quantized

    def runs_int8(self, node: onnx.NodeProto | None) -> bool:
        return node is not None and id(node) in self.int8_kernels

    def fold_qdq(self) -> tuple[_Aliases, set[int]]:
        """The tensors that share a buffer once QDQ pairs fold, and the Q/DQ nodes folded away: a
        QuantizeLinear of what an int8 kernel wrote (or of the model input), if it is the tensor's
        only reader; a DequantizeLinear read only by int8 kernels."""
        aliases, folded = _Aliases(), set()
        for node in self.nodes:
            if node.op_type not in (QUANTIZE, DEQUANTIZE) or node.input[0] in self.constants:
                continue
            source, result = node.input[0], node.output[0]
            if node.op_type == QUANTIZE:
                written_by_int8 = self.runs_int8(self.producer.get(source)) or source in self.inputs
                readers = self.consumers[source]  # a second Quantize stays: it requantizes the first's buffer
                fold = written_by_int8 and readers[0] is node and all(c.op_type == QUANTIZE for c in readers)
            else:
                readers = self.consumers.get(result, [])
                fold = bool(readers) and result not in self.outputs and all(self.runs_int8(r) for r in readers)
            if fold:
                aliases.join(result, source)
                folded.add(id(node))
        return aliases, folded


def _storage_types(model: onnx.ModelProto, aliases: _Aliases) -> dict[str, tuple[tuple[int, ...], int]]:
    """(shape, ONNX data type) of every alias class: a folded class is stored in its quantized
    type, the type of its narrowest member."""
    storage: dict[str, tuple[tuple[int, ...], int]] = {}
    graph = model.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        root = aliases.root(info.name)
        if root not in storage or element_bytes(tensor_type.elem_type) < element_bytes(storage[root][1]):
            storage[root] = (shape, tensor_type.elem_type)
    return storage


def _activation(name: str, storage: dict[str, tuple[tuple[int, ...], int]], producer: str) -> Activation:
    if name not in storage or any(size < 0 for size in storage[name][0]):
        raise ValueError(f"tensor {name!r} has no static shape: export the model at a fixed input size")
    shape, data_type = storage[name]
    dtype = helper.tensor_dtype_to_np_dtype(data_type)
    return Activation(name, shape, dtype.name, math.prod(shape) * dtype.itemsize, producer)


# ------------------------------------------------------------------------------------ schedules
@dataclass(frozen=True)
class Buffer:
    """One arena buffer: the tensors that share it (several when an op runs in place) and the
    first and last steps it is alive."""

    tensors: tuple[str, ...]
    nbytes: int
    first: int
    last: int


@dataclass
class Schedule:
    """An execution order and its memory: live bytes at each step, the peak and what is live there."""

    order: tuple[int, ...]
    step_bytes: list[int]
    peak_bytes: int
    peak_step: int
    live_at_peak: list[tuple[str, int]]        # (tensor, bytes it adds at the peak) summing to the peak
    buffers: list[Buffer]
    inplace: bool
    found_by: str = ""
    exact_search: str = ""


class _Memory:
    """The graph as index arrays, and the one step rule every scheduler uses: running op ``o``
    after the set of ops ``done`` (a bit mask), which inputs die there, which outputs overwrite a
    dying input, and the live bytes during and after it."""

    def __init__(self, graph: McuGraph, inplace: bool) -> None:
        self.graph, self.inplace = graph, inplace
        names = list(graph.tensors)
        index = {name: i for i, name in enumerate(names)}
        self.names = names
        self.nbytes = [graph.tensors[name].nbytes for name in names]
        self.reads = [tuple(index[name] for name in op.inputs) for op in graph.ops]
        self.writes = [tuple(index[name] for name in op.outputs) for op in graph.ops]
        self.readers_mask = [0] * len(names)
        for o, reads in enumerate(self.reads):
            for t in reads:
                self.readers_mask[t] |= 1 << o
        self.kept = {index[name] for name in graph.outputs}
        self.input_ids = [index[name] for name in graph.inputs]
        writer = {t: o for o, writes in enumerate(self.writes) for t in writes}
        self.needs = [sum(1 << writer[t] for t in set(reads) if t in writer) for reads in self.reads]
        readers: dict[int, list[int]] = {}
        for o, reads in enumerate(self.reads):
            for t in reads:
                readers.setdefault(t, []).append(o)
        self.successors = [sorted({r for t in writes for r in readers.get(t, ())}) for writes in self.writes]
        self.inplace_pairs = [self._inplace_pairs(op, index) if inplace else () for op in graph.ops]

    def _inplace_pairs(self, op: McuOp, index: dict[str, int]) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """(output, inputs it may overwrite): inputs of the output's shape and type."""
        if op.op_type in INPLACE_UNARY:
            candidates = op.inputs[:1]
        elif op.op_type in INPLACE_BINARY:
            candidates = op.inputs
        else:
            return ()
        tensors = self.graph.tensors
        out = tensors[op.outputs[0]]
        same = tuple(index[name] for name in candidates
                     if tensors[name].nbytes == out.nbytes and tensors[name].dtype == out.dtype
                     and (op.op_type in INPLACE_UNARY or tensors[name].shape == out.shape))
        return ((index[op.outputs[0]], same),) if same else ()

    def initial_live(self) -> int:
        return sum(self.nbytes[t] for t in self.input_ids)

    def step(self, done: int, live: int, o: int) -> tuple[int, int, list[int], dict[int, int]]:
        """(bytes during the op, bytes after it, inputs that die, {output: input it overwrites})."""
        bit = 1 << o
        dying = [t for t in self.reads[o] if t not in self.kept and self.readers_mask[t] & ~done == bit]
        reused: dict[int, int] = {}
        for out, candidates in self.inplace_pairs[o]:
            free = next((t for t in candidates if t in dying and t not in reused.values()), None)
            if free is not None:
                reused[out] = free
        written = sum(self.nbytes[t] for t in self.writes[o])
        during = live + written - sum(self.nbytes[t] for t in reused)
        unread = sum(self.nbytes[t] for t in self.writes[o] if not self.readers_mask[t] and t not in self.kept)
        after = live + written - sum(self.nbytes[t] for t in dying) - unread
        return during, after, dying, reused

    def ready_after(self, done: int, ready: Iterable[int], o: int) -> tuple[int, ...]:
        done |= 1 << o
        newly = [s for s in self.successors[o] if not done >> s & 1 and self.needs[s] & ~done == 0]
        return tuple(sorted({*(r for r in ready if r != o), *newly}))

    def first_ready(self) -> tuple[int, ...]:
        return tuple(o for o in range(len(self.reads)) if self.needs[o] == 0)


def simulate(graph: McuGraph, order: Sequence[int], inplace: bool = True) -> Schedule:
    """The memory of running ``graph``'s ops in ``order`` (indices into ``graph.ops``)."""
    memory = _Memory(graph, inplace)
    if sorted(order) != list(range(len(graph.ops))):
        raise ValueError("an order must name every op once")
    done, live = 0, memory.initial_live()
    buffer_of = {t: [t] for t in memory.input_ids}          # tensor -> the tensors sharing its buffer
    first = dict.fromkeys(memory.input_ids, 0)
    last: dict[int, int] = {}
    alive = set(memory.input_ids)
    step_bytes, peak, peak_step, at_peak = [], -1, 0, []
    for position, o in enumerate(order):
        if memory.needs[o] & ~done:
            raise ValueError(f"op {graph.ops[o].name} runs before an op it reads from")
        during, live, dying, reused = memory.step(done, live, o)
        step_bytes.append(during)
        if during > peak:
            peak, peak_step = during, position
            at_peak = [(memory.names[t], memory.nbytes[t]) for t in sorted(alive)]
            at_peak += [(memory.names[t], 0 if t in reused else memory.nbytes[t]) for t in memory.writes[o]]
        for t in memory.writes[o]:
            if t in reused:
                buffer_of[t] = buffer_of[reused[t]] + [t]
                first[t] = first[reused[t]]
            else:
                buffer_of[t], first[t] = [t], position
            last[t] = position
            alive.add(t)
        for t in memory.reads[o]:
            last[t] = position
        alive -= set(dying)
        alive -= {t for t in memory.writes[o] if not memory.readers_mask[t] and t not in memory.kept}
        done |= 1 << o
    end = len(order) - 1
    taken_over = {s for shared in buffer_of.values() for s in shared[:-1]}  # their buffer lives on in a later tensor
    buffers = []
    for t, shared in buffer_of.items():
        if t in taken_over:
            continue
        buffers.append(Buffer(tuple(memory.names[s] for s in shared), memory.nbytes[t], first[t],
                              end if any(s in memory.kept for s in shared) else last.get(t, first[t])))
    return Schedule(tuple(order), step_bytes, peak, peak_step, at_peak, buffers, inplace)


def greedy_order(graph: McuGraph, inplace: bool = True, prefer: str = "after") -> list[int]:
    """An order built one op at a time: among the ready ops, the one that leaves the fewest live
    bytes after it (``prefer="after"``) or needs the fewest while it runs (``"during"``), ties
    going to the model's order."""
    memory = _Memory(graph, inplace)
    done, live, ready, order = 0, memory.initial_live(), memory.first_ready(), []
    while ready:
        costs = {o: memory.step(done, live, o)[:2] for o in ready}
        if prefer == "after":
            o = min(ready, key=lambda r: (costs[r][1], costs[r][0], r))
        else:
            o = min(ready, key=lambda r: (costs[r][0], costs[r][1], r))
        live = costs[o][1]
        ready = memory.ready_after(done, ready, o)
        done |= 1 << o
        order.append(o)
    return order


def exact_order(graph: McuGraph, inplace: bool = True, bound: int | None = None,
                max_states: int = DEFAULT_SEARCH_STATES) -> list[int] | None:
    """An order of the lowest peak of live bytes, by dynamic programming over the sets of ops
    already run (what is live after a set does not depend on the order that ran it), one op
    more at a time. Paths above ``bound`` (a peak already reached, e.g. by the greedy order) are
    cut. None when more than ``max_states`` sets would be visited."""
    memory = _Memory(graph, inplace)
    n = len(graph.ops)
    layer = {0: (memory.initial_live(), memory.initial_live(), memory.first_ready())}  # done: (peak, live, ready)
    came_from: dict[int, tuple[int, int]] = {}
    visited = 1
    for _ in range(n):
        following: dict[int, tuple[int, int, tuple[int, ...]]] = {}
        for done, (peak, live, ready) in layer.items():
            for o in ready:
                during, after, _, _ = memory.step(done, live, o)
                reached = max(peak, during)
                if bound is not None and reached > bound:
                    continue
                state = done | 1 << o
                if state not in following or reached < following[state][0]:
                    following[state] = (reached, after, memory.ready_after(done, ready, o))
                    came_from[state] = (done, o)
        visited += len(following)
        if visited > max_states or not following:
            return None
        layer = following
    state, order = (1 << n) - 1, []
    while state:
        state, o = came_from[state]
        order.append(o)
    return order[::-1]


def best_schedule(graph: McuGraph, inplace: bool = True, max_states: int = DEFAULT_SEARCH_STATES) -> Schedule:
    """The order of lowest peak among the model's own, the two greedy ones and the exact search's
    (within ``max_states``), then of smallest planned arena; ``found_by`` names the first that
    reached both."""
    candidates = [("graph order", list(range(len(graph.ops)))),
                  ("greedy (fewest bytes after)", greedy_order(graph, inplace, "after")),
                  ("greedy (fewest bytes during)", greedy_order(graph, inplace, "during"))]
    schedules = [(name, simulate(graph, order, inplace)) for name, order in candidates]
    bound = min(schedule.peak_bytes for _, schedule in schedules)
    exact = exact_order(graph, inplace, bound, max_states)
    if exact is None:
        note = f"stopped: more than {max_states:,} states (the best of the others is kept)"
    else:
        schedules.append(("exact search", simulate(graph, exact, inplace)))
        note = "complete: the peak is the lowest of any order"
    # Orders of the same peak can differ in how well they pack: the smaller planned arena wins.
    name, schedule = min(schedules, key=lambda named: (named[1].peak_bytes, plan_arena(named[1].buffers).nbytes))
    schedule.found_by, schedule.exact_search = name, note
    return schedule


# ----------------------------------------------------------------------------------- the arena
@dataclass(frozen=True)
class ArenaPlan:
    """Offsets of the buffers in one arena; ``nbytes`` is the arena's size, ``placement`` the
    order the buffers were placed in."""

    nbytes: int
    placement: str
    offsets: dict[tuple[str, ...], int] = field(default_factory=dict)


# Orders to place buffers in. "largest first" is TFLite Micro's GreedyMemoryPlanner (ties: the
# earliest first); the others are what an offline plan (which TFLite Micro also accepts) may use.
PLACEMENT_ORDERS = {
    "largest first": lambda b: (-b.nbytes, b.first, b.last),
    "largest bytes x lifetime first": lambda b: (-b.nbytes * (b.last - b.first + 1), b.first),
    "longest lifetime first": lambda b: (-(b.last - b.first), -b.nbytes, b.first),
    "earliest first": lambda b: (b.first, -b.nbytes, b.last),
}


def plan_arena(buffers: Sequence[Buffer], alignment: int = ARENA_ALIGNMENT,
               placement: str = "largest first") -> ArenaPlan:
    """A greedy plan: buffers taken in ``placement`` order (by default TFLite Micro's, largest
    first), each put at the lowest offset that overlaps no placed buffer alive at the same time,
    its size rounded up to ``alignment``. Gaps left between buffers make the arena larger than the
    peak of live bytes when no later buffer fills them."""
    placed: list[tuple[int, int, Buffer]] = []                   # (offset, end, buffer)
    for buffer in sorted(buffers, key=PLACEMENT_ORDERS[placement]):
        size = -(-buffer.nbytes // alignment) * alignment
        if size == 0:
            continue
        offset = 0
        for start, end, other in sorted(placed, key=lambda p: p[0]):
            if other.first > buffer.last or buffer.first > other.last:
                continue  # never alive together: may overlap in memory
            if offset + size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, offset + size, buffer))
    return ArenaPlan(max((end for _, end, _ in placed), default=0), placement,
                     {buffer.tensors: start for start, _, buffer in placed})


def best_plan(buffers: Sequence[Buffer], alignment: int = ARENA_ALIGNMENT) -> ArenaPlan:
    """The smallest of the plans of every placement order (the first, TFLite Micro's, on ties)."""
    return min((plan_arena(buffers, alignment, name) for name in PLACEMENT_ORDERS), key=lambda plan: plan.nbytes)


# --------------------------------------------------------------------------------- the verdict
FITS_ONE_REGION = "fits in one region"
FITS_SPLIT = "fits only split across regions"
DOES_NOT_FIT = "does not fit"


def ram_verdict(target: McuTarget, arena_bytes: int) -> str:
    """Whether an arena fits the part's largest contiguous block, only its whole RAM (a runtime
    that can split its arena over several regions), or neither."""
    if arena_bytes <= target.largest_region_kib * KIB:
        return FITS_ONE_REGION
    if arena_bytes <= target.ram_kib * KIB:
        return FITS_SPLIT
    return DOES_NOT_FIT


def verdict(target: McuTarget, flash_total: int, arena_bytes: int, best_arena_bytes: int | None = None) -> dict:
    """The part against the model: flash needed and available, arena and RAM, and one verdict
    (the RAM's, or "does not fit" when the flash is short). ``best_arena_bytes``, an arena a better
    (offline) plan reaches, gets its own verdict beside."""
    flash_fits = flash_total <= target.flash_kib * KIB
    ram = ram_verdict(target, arena_bytes)
    result = {"target": target.name, "flash_kib": target.flash_kib, "ram_kib": target.ram_kib,
              "largest_region_kib": target.largest_region_kib, "source": target.source,
              "flash_needed_kib": flash_total / KIB, "arena_kib": arena_bytes / KIB,
              "flash_fits": flash_fits, "ram": ram, "verdict": ram if flash_fits else DOES_NOT_FIT}
    if best_arena_bytes is not None:
        best = ram_verdict(target, best_arena_bytes)
        result.update(best_arena_kib=best_arena_bytes / KIB, verdict_best_plan=best if flash_fits else DOES_NOT_FIT)
    return result


# --------------------------------------------------------------------------------- the report
def kernel_kind(op: McuOp) -> str:
    if op.quantized:
        return "int8"
    return "conversion" if op.op_type in (QUANTIZE, DEQUANTIZE) else "fp32"


def schedule_summary(graph: McuGraph, schedule: Schedule) -> dict:
    """A schedule as plain data: the peak of live bytes, TFLite Micro's planned arena and the best
    plan's, the op at the peak, what is live there, and the live bytes at every op."""
    plan, best = plan_arena(schedule.buffers), best_plan(schedule.buffers)
    peak_op = graph.ops[schedule.order[schedule.peak_step]]
    live = []
    for name, nbytes in schedule.live_at_peak:
        tensor = graph.tensors[name]
        live.append({"tensor": name, "producer": tensor.producer, "shape": list(tensor.shape), "dtype": tensor.dtype,
                     "bytes": nbytes, **({"note": "written in place of an input"} if nbytes == 0 else {})})
    return {"inplace": schedule.inplace, "peak_live_bytes": schedule.peak_bytes, "planned_arena_bytes": plan.nbytes,
            "best_plan_bytes": best.nbytes, "best_plan_placement": best.placement,
            "found_by": schedule.found_by, "exact_search": schedule.exact_search,
            "peak_step": schedule.peak_step, "steps": len(schedule.order),
            "peak_op": {"name": peak_op.name, "op_type": peak_op.op_type, "kernel": kernel_kind(peak_op)},
            "live_at_peak": live,
            "timeline": [{"op": graph.ops[o].name, "op_type": graph.ops[o].op_type, "live_bytes": nbytes}
                         for o, nbytes in zip(schedule.order, schedule.step_bytes)]}


def fit_report(path: str | Path, targets: Sequence[McuTarget] = TARGETS, inplace: bool = True,
               max_states: int = DEFAULT_SEARCH_STATES) -> dict:
    """The fit report of the ONNX model at ``path``: flash by kind, the arena with and without
    in-place ops, and a verdict per target on the planned arena of ``inplace``'s choice."""
    model = load_model(path)
    flash = flash_bytes(model)
    graph = mcu_graph(model)
    ram = {mode: schedule_summary(graph, best_schedule(graph, mode == "inplace", max_states))
           for mode in ("inplace", "no_inplace")}
    chosen = ram["inplace" if inplace else "no_inplace"]
    quantized = any(node.op_type == DEQUANTIZE for node in model.graph.node)
    return {"model": str(path), "kind": "int8 (QDQ)" if quantized else "fp32", "units": "bytes; KiB = 1024 bytes",
            "input": [{"name": name, "shape": list(graph.tensors[name].shape), "dtype": graph.tensors[name].dtype,
                       "bytes": graph.tensors[name].nbytes} for name in graph.inputs],
            "ops": len(graph.ops), "int8_ops": sum(op.quantized for op in graph.ops),
            "flash": flash.as_dict(), "ram": ram, "verdict_on": "inplace" if inplace else "no_inplace",
            "targets": [verdict(target, flash.total, chosen["planned_arena_bytes"], chosen["best_plan_bytes"])
                        for target in targets]}
