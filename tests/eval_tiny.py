"""Tiny models, an in-memory tokenizer and float64 reference computations for the evaluation tests."""

from __future__ import annotations

import copy
import math

import torch
import transformers as tf

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "big", "small", "red", "blue", "and", "then",
         "saw", "bird", "tree", "under", "over", "happy", "sad", "day", "night", "home", "went", "to", "."]


def word_tokenizer():
    """A word-level fast tokenizer over :data:`WORDS` with BOS/EOS/UNK/PAD, built without files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>")


def random_text(n_words: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=g)
    return " ".join(WORDS[i] for i in idx.tolist())


def tiny_llama(*, layers: int = 4, vocab: int = 64, tie: bool = False, max_positions: int = 128, seed: int = 0):
    """A random fp32 Llama; weights wider than HF's init so every block changes the logits."""
    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = tf.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.15)
    return model.eval()


@torch.inference_mode()
def reference_perplexity(model, ids: torch.Tensor, seq_len: int, stride: int | None):
    """The perplexity protocol written the plain ``transformers`` way, in float64.

    One window at a time, ``labels`` = the window with the unscored positions set to -100,
    and the model's own shifted cross-entropy (``out.loss``, a mean over the labels it
    scores) weighted by the number of scored tokens. Returns ``(perplexity, tokens_scored)``.
    """
    m64 = copy.deepcopy(model).double()
    n = int(ids.numel())
    nll, count, prev_end = 0.0, 0, 0
    step = seq_len if stride is None else stride
    for begin in range(0, n, step):
        end = min(begin + seq_len, n)
        if stride is None and end - begin < seq_len:
            break  # non-overlapping protocol: the incomplete tail is dropped
        x = ids[begin:end].unsqueeze(0)
        labels = x.clone()
        if stride is not None:
            labels[:, : (end - begin) - (end - prev_end)] = -100
        out = m64(input_ids=x, labels=labels, use_cache=False)
        scored = int((labels[:, 1:] != -100).sum())
        nll += float(out.loss) * scored
        count += scored
        prev_end = end
        if end == n:
            break
    return math.exp(nll / count), count
