"""Offline data registry: corpora and tasks shipped inside PyPI/Debian packages."""

from experiments.data.corpora import MCItem
from experiments.data.corpora import austen_novels
from experiments.data.corpora import bigbench_task
from experiments.data.corpora import bigbench_tasks
from experiments.data.corpora import paul_graham_essays
from experiments.data.corpora import ptb_lines
from experiments.data.corpora import ptb_text
from experiments.data.corpora import shakespeare_plays
from experiments.data.corpora import token_windows
from experiments.data.corpora import wikipedia_paragraphs
from experiments.data.corpora import wikipedia_text
from experiments.data.registry import SOURCES
from experiments.data.registry import FetchError
from experiments.data.registry import Source
from experiments.data.registry import cache_dir
from experiments.data.registry import extract
from experiments.data.registry import fetch

__all__ = [
    "FetchError",
    "MCItem",
    "SOURCES",
    "Source",
    "austen_novels",
    "bigbench_task",
    "bigbench_tasks",
    "cache_dir",
    "extract",
    "fetch",
    "paul_graham_essays",
    "ptb_lines",
    "ptb_text",
    "shakespeare_plays",
    "token_windows",
    "wikipedia_paragraphs",
    "wikipedia_text",
]
