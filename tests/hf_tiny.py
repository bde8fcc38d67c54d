"""Tiny randomly initialised Hugging Face models, one per adapted family (built from configs: no download)."""

from __future__ import annotations

import torch

VOCAB = 96


def tiny_models() -> dict:
    """family -> a factory of a tiny model with 2 blocks, width 32, 2 heads (eval mode, seeded)."""
    import transformers as tf

    common = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, vocab_size=VOCAB)
    specs = {
        "gpt2": (tf.GPT2Config, dict(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0), tf.GPT2LMHeadModel),
        "gpt_neox": (tf.GPTNeoXConfig, dict(common, intermediate_size=64, max_position_embeddings=64), tf.GPTNeoXForCausalLM),
        "llama": (tf.LlamaConfig, dict(common, num_key_value_heads=2, intermediate_size=64), tf.LlamaForCausalLM),
        "mistral": (tf.MistralConfig, dict(common, num_key_value_heads=1, intermediate_size=64), tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config, dict(common, num_key_value_heads=1, intermediate_size=64), tf.Qwen2ForCausalLM),
        "bert": (tf.BertConfig, dict(common, intermediate_size=64), tf.BertForMaskedLM),
        "roberta": (tf.RobertaConfig, dict(common, intermediate_size=64, pad_token_id=1), tf.RobertaForMaskedLM),
        "opt": (tf.OPTConfig, dict(common, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64), tf.OPTForCausalLM),
    }

    def factory(config_cls, kwargs, model_cls):
        def make(seed: int = 0):
            torch.manual_seed(seed)
            return model_cls(config_cls(**kwargs)).eval()

        return make

    return {name: factory(*spec) for name, spec in specs.items()}
