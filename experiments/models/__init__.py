"""Offline model zoo: Flax NNX architectures (no mxjax imports) and their loaders.

Submodules import heavy optional packages (``gguf``, ``safetensors``, ``tokenizers``) only
inside the functions that need them, so importing the architectures costs nothing extra.
"""

from experiments.models.bert import BertConfig
from experiments.models.bert import BertEncoder
from experiments.models.bert import mean_pool
from experiments.models.gemma3 import Gemma3
from experiments.models.gemma3 import Gemma3Config
from experiments.models.llama import Llama
from experiments.models.llama import LlamaConfig
from experiments.models.llama import greedy_generate

__all__ = [
    "BertConfig",
    "BertEncoder",
    "Gemma3",
    "Gemma3Config",
    "Llama",
    "LlamaConfig",
    "greedy_generate",
    "mean_pool",
]
