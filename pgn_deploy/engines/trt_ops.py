"""Which ONNX operators TensorRT's ONNX parser imports, and with which tensor types.

The table restates the operator support matrix of onnx-tensorrt's ``docs/operators.md`` for
**TensorRT 10.15** (ONNX opsets 9 to 24, default domain). TensorRT 11.x parses the same set
plus ``Swish`` (11.0) and opset 25 (11.5); the lint checks against this table, so a model that
passes it parses on TensorRT 10.15 and later. Restrictions the lint checks on attributes and
constant inputs are in :mod:`pgn_deploy.engines.lint`.
"""
from __future__ import annotations

TABLE_TENSORRT_VERSION = "10.15"
OPSET_MIN = 9
OPSET_MAX = 24

_F = "FP32 FP16 BF16"
_FI = _F + " INT32 INT64"
_FIB = _FI + " BOOL"

# op type -> supported element types (TensorRT names), as listed in the parser's matrix.
_SUPPORTED_SPEC = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "And": "BOOL", "ArgMax": _FI, "ArgMin": _FI,
    "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F, "Attention": _F + " INT8 FP8",
    "AveragePool": _F, "BatchNormalization": _F, "BlackmanWindow": "FP32 FP16",
    "Cast": _FI + " UINT8 BOOL", "CastLike": _FI + " UINT8 BOOL", "Ceil": _F, "Celu": _F,
    "Clip": _F, "Concat": _FIB, "Constant": _FIB + " FP8 FP4 INT4",
    "ConstantOfShape": _FIB + " FP8 FP4 INT4", "Conv": _F, "ConvTranspose": _F, "Cos": _F,
    "Cosh": _F, "CumSum": _F, "DeformConv": "FP32 FP16", "DepthToSpace": _FI,
    "DequantizeLinear": "INT8 FP8 FP4 INT4", "Div": _FI, "Dropout": _F, "Einsum": _F, "Elu": _F,
    "Equal": _FI, "Erf": _F, "Exp": _F, "Expand": _FIB, "EyeLike": _FIB, "Flatten": _FIB,
    "Floor": _F, "Gather": _FIB, "GatherElements": _FIB, "GatherND": _FIB,
    "Gelu": _FI + " INT8", "Gemm": _F, "GlobalAveragePool": _F, "GlobalLpPool": _F,
    "GlobalMaxPool": _F, "Greater": _FI, "GreaterOrEqual": _FI, "GridSample": "FP32 FP16",
    "GroupNormalization": _F, "GRU": _F, "HammingWindow": "FP32 FP16", "HannWindow": "FP32 FP16",
    "HardSigmoid": _F, "HardSwish": _F, "Hardmax": _F, "Identity": _FIB, "If": _FIB,
    "ImageScaler": _F, "InstanceNormalization": _F, "IsInf": _F, "IsNaN": _FI,
    "LayerNormalization": _F, "LeakyRelu": _F, "Less": _FI, "LessOrEqual": _FI, "Log": _F,
    "LogSoftmax": _F, "Loop": _FIB, "LRN": _F, "LSTM": _F, "LpNormalization": _F, "LpPool": _F,
    "MatMul": _F, "Max": _FI, "MaxPool": _F, "Mean": _FI + " FP8",
    "MeanVarianceNormalization": _F, "Min": _FI, "Mish": "FP32 FP16", "Mod": _FI, "Mul": _FI,
    "Neg": _FI, "NonMaxSuppression": "FP32 FP16", "NonZero": "FP32 FP16", "Not": "BOOL",
    "OneHot": _FIB, "Or": "BOOL", "Pad": _FI, "ParametricSoftplus": _F, "Pow": _FI, "PRelu": _F,
    "QuantizeLinear": _F, "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F,
    "RandomUniformLike": _F, "Range": _FI, "Reciprocal": _F, "ReduceL1": _FI, "ReduceL2": _FI,
    "ReduceLogSum": _FI, "ReduceLogSumExp": _FI, "ReduceMax": _FI, "ReduceMean": _FI,
    "ReduceMin": _FI, "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "ReverseSequence": _FIB, "RMSNormalization": _F, "RNN": _F,
    "RoiAlign": "FP32 FP16", "RotaryEmbedding": _F, "Round": _F, "STFT": "FP32",
    "ScaledTanh": _F, "Scan": _F, "Scatter": _FI, "ScatterElements": _FI, "ScatterND": _FI,
    "Selu": _F, "Shape": _FIB, "Shrink": _FI, "Sigmoid": _F, "Sign": _FI, "Sin": _F, "Sinh": _F,
    "Size": _FIB, "Slice": _FIB, "Softmax": _F, "Softplus": _F, "Softsign": _F,
    "SpaceToDepth": _FI, "Split": _FIB, "Sqrt": _F, "Squeeze": _FIB, "Sub": _FI, "Sum": _FI,
    "Tan": _F, "Tanh": _F, "TensorScatter": "FP32 FP16 BF16 INT32", "ThresholdedRelu": _F,
    "Tile": _FIB, "TopK": _FI, "Transpose": _FIB, "Trilu": _FIB, "Unsqueeze": _FIB,
    "Upsample": _F, "Where": _FIB, "Xor": "BOOL",
}
SUPPORTED: dict[str, frozenset[str]] = {op: frozenset(t.split()) for op, t in _SUPPORTED_SPEC.items()}

# Listed as not supported by the parser (an op absent from both tables is unknown to it too).
UNSUPPORTED = frozenset(
    "AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im "
    "CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear "
    "ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial "
    "NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv "
    "QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase "
    "SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence "
    "StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique".split()
)

# ONNX TensorProto element type -> the name the table uses (types absent here: not supported).
ONNX_TO_TRT_TYPE = {
    1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
    11: "DOUBLE", 17: "FP8", 22: "INT4", 23: "FP4",
}

# Resize attributes the parser accepts.
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_COORDINATE_MODES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})

# Ops whose output shape depends on tensor values: they parse, but they defeat shape
# specialization and need data-dependent allocation at run time.
DATA_DEPENDENT_SHAPE_OPS = frozenset({"NonZero", "NonMaxSuppression", "Loop", "If"})

# Ops whose ``axes``-like second input must be a build-time constant.
CONSTANT_AXES_OPS = frozenset(
    {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
     "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze", "CumSum"}
)
