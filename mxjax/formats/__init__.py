"""Element and scale formats as data, with exact encode/decode and sub-byte packing."""

from mxjax.formats.element import ElementFormat
from mxjax.formats.element import Kind
from mxjax.formats.element import all_formats
from mxjax.formats.element import get_format
from mxjax.formats.exact import div_rn
from mxjax.formats.packing import pack
from mxjax.formats.packing import packed_length
from mxjax.formats.packing import swap_nibbles
from mxjax.formats.packing import unpack
from mxjax.formats.rounding import Rounding
from mxjax.formats.rounding import decode
from mxjax.formats.rounding import encode
from mxjax.formats.rounding import round_to_format
from mxjax.formats.scales import ScaleFormat
from mxjax.formats.scales import ScaleRule
from mxjax.formats.scales import e8m0_from_amax
from mxjax.formats.scales import e8m0_split
from mxjax.formats.scales import e8m0_to_float32
from mxjax.formats.scales import to_e4m3

__all__ = [
    "ElementFormat",
    "Kind",
    "Rounding",
    "ScaleFormat",
    "ScaleRule",
    "all_formats",
    "decode",
    "div_rn",
    "e8m0_from_amax",
    "e8m0_split",
    "e8m0_to_float32",
    "encode",
    "get_format",
    "pack",
    "packed_length",
    "round_to_format",
    "swap_nibbles",
    "to_e4m3",
    "unpack",
]
