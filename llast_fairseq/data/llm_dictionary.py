"""A fairseq Dictionary that mirrors an HF tokenizer id for id, and its detokenizer.

SequenceGenerator takes pad/eos/unk and the vocabulary size from the target dictionary, so these
must be the LLM's own (see shared notes "An HF causal LM behind fairseq's SequenceGenerator").
"""
from typing import Optional

from fairseq.data import Dictionary


def resolve_pad_id(tokenizer, pad_token: Optional[str] = None) -> int:
    """The id fairseq pads with: ``pad_token`` if given, else the tokenizer's pad, else its unk.

    It may not be EOS: SequenceGenerator sets pad to -inf every step, so EOS could never be chosen.
    """
    if pad_token is not None:
        pad_id = tokenizer.convert_tokens_to_ids(pad_token)
        if pad_id is None or pad_id == tokenizer.unk_token_id and pad_token != tokenizer.unk_token:
            raise ValueError(f"--pad-token {pad_token!r} is not a token of the LLM's vocabulary")
    elif tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        pad_id = tokenizer.pad_token_id
    elif tokenizer.unk_token_id is not None:
        pad_id = tokenizer.unk_token_id
    else:
        raise ValueError(
            "the LLM tokenizer has no pad token other than EOS and no unk token; pass "
            "--pad-token with a reserved token of its vocabulary (e.g. '<|reserved_special_token_0|>')"
        )
    if pad_id == tokenizer.eos_token_id:
        raise ValueError("the pad token may not be the EOS token: pass another --pad-token")
    return pad_id


def build_llm_dictionary(tokenizer, vocab_size: int, pad_token: Optional[str] = None) -> Dictionary:
    """Dictionary whose index i is token id i, padded with placeholders to ``vocab_size``.

    ``vocab_size`` is the LM head's output size (it may exceed the tokenizer's length).
    Symbols are the tokenizer's pieces; an empty, duplicate or whitespace-holding piece is named
    ``<llast_id_i>`` so every index stays unique (decoding goes through ids, not symbols).
    """
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the LLM's output layer only {vocab_size}"
        )
    d = Dictionary(add_special_symbols=False)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for i in range(vocab_size):
        piece = pieces[i] if i < len(pieces) else None
        if not piece or any(c.isspace() for c in piece) or piece in d.indices:
            piece = f"<llast_id_{i}>"
        assert d.add_symbol(piece) == i
    d.eos_index = tokenizer.eos_token_id
    d.pad_index = resolve_pad_id(tokenizer, pad_token)
    d.unk_index = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else d.pad_index
    d.bos_index = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else d.eos_index
    d.eos_word, d.pad_word = d.symbols[d.eos_index], d.symbols[d.pad_index]
    d.unk_word, d.bos_word = d.symbols[d.unk_index], d.symbols[d.bos_index]
    return d


class LLMDetokenizer:
    """fairseq "bpe" for generate: turns ``Dictionary.string`` output back into text.

    ``Dictionary.string`` joins symbols with spaces; the symbols map back to ids, which the
    tokenizer decodes (byte fallback and byte-level BPE included).
    """

    def __init__(self, tokenizer, dictionary: Dictionary):
        self.tokenizer = tokenizer
        self.dictionary = dictionary

    def encode(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return " ".join(self.dictionary[i] for i in ids)

    def decode(self, symbols: str) -> str:
        ids = [self.dictionary.index(s) for s in symbols.split()]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
