"""Text -> tokenizer -> token files (``np.memmap``) for TinyStories, a synthetic demo corpus, or any .txt.

Public API: ``prepare_dataset``, ``PreparedDataset``, ``load_token_file``, ``Tokenizer``, ``train_bpe``
(CS336's from-scratch trainer), ``generate_demo_corpus``, plus the single steps ``download_tinystories``,
``train_tokenizer`` and ``encode_file``. Command line: ``cs336-data --help``.
"""

from cs336_basics.data.bpe import train_bpe
from cs336_basics.data.chunking import EOT
from cs336_basics.data.demo_corpus import generate_demo_corpus
from cs336_basics.data.download import download_tinystories
from cs336_basics.data.encode import encode_file
from cs336_basics.data.prepare import PreparedDataset, prepare_dataset
from cs336_basics.data.token_file import load_token_file
from cs336_basics.data.tokenizer import Tokenizer
from cs336_basics.data.train_tokenizer import train_tokenizer

__all__ = [
    "EOT",
    "PreparedDataset",
    "Tokenizer",
    "download_tinystories",
    "encode_file",
    "generate_demo_corpus",
    "load_token_file",
    "prepare_dataset",
    "train_bpe",
    "train_tokenizer",
]
