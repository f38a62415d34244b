"""Create a tiny random-weight causal LM and a byte-level tokenizer locally, with no download.

The result is an ordinary Hugging Face-format directory (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a chat template), so it exercises exactly the loading path of a real model.
"""

from __future__ import annotations

from pathlib import Path

# Kept small so that tests and `llmctl serve --tiny` start in seconds on two CPU cores.
TINY_HIDDEN = 64
TINY_LAYERS = 2
TINY_HEADS = 4
TINY_KV_HEADS = 2
TINY_CONTEXT = 512

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _byte_level_tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # One token per byte (the ByteLevel alphabet), no merges: any text, in any script, round-trips.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", "<pad>"])
    return tok


def create_tiny_model(
    target: Path,
    *,
    seed: int = 0,
    context: int = TINY_CONTEXT,
    hidden: int = TINY_HIDDEN,
    layers: int = TINY_LAYERS,
    heads: int = TINY_HEADS,
    kv_heads: int = TINY_KV_HEADS,
) -> Path:
    """Write a small Llama-architecture model with random weights into ``target`` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_tokenizer(),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=context,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(target))

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(target), safe_serialization=True)
    return target
