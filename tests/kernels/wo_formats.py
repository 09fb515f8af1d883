"""The weight formats the wo_matmul kernel tests run, as (mxjax preset, overrides), with test ids;
shared by test_wo_matmul.py (real weights) and test_lowering.py (shapes only)."""

FORMATS = [
    ("int4_g128", {}),
    ("int4_g128", {"block_size": 32}),
    ("int4_g128", {"block_size": 64}),
    ("int4_g128_asym", {}),
    ("int4_g128_asym", {"block_size": 64, "scale": "bf16"}),  # a scheme's bf16 scales
    ("mxfp4", {}),
    ("nvfp4", {}),
    ("nf4_g64", {}),
    ("int8", {}),
    ("fp8_e4m3_rowwise", {}),
]
IDS = [p + "".join(f"-{k}{v}" for k, v in o.items()) for p, o in FORMATS]
