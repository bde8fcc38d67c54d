"""Signal propagation of models sigprop did not build: a folder written by `save_pretrained`, a hub id, or any nn.Module.

    a = sp.analyze(model="EleutherAI/pythia-160m", revisions=["step1000", "step143000"])   # needs a network
    a = sp.analyze(my_module)                                                             # any nn.Module

The probe batch is the code corpus (the stdlib validation split) through the model's own tokenizer when it
has one, else random or repeated tokens from its vocabulary. A local folder's revisions are its subfolders
(DIR/step1000, DIR/step10000, ...), so checkpoints downloaded once can be analysed offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from sigprop.data.corpus import stdlib_corpus
from sigprop.errors import SigpropError, check_choice
from sigprop.probes import cosine_kernel, measure, probe_points

DATA_SOURCES = ("code", "random", "repeat")


@dataclass
class Loaded:
    """One model to analyse: a label (folder or id, @revision), the module and its tokenizer (None if it has none)."""

    label: str
    model: nn.Module
    tokenizer: object | None = None


def _transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is in the dev/hf extras
        raise SigpropError("analysing a pretrained model (--model) needs transformers: pip install 'sigprop[hf]'") from e
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # sigprop shows its own progress
    return transformers


def load_pretrained(source: str, revision: str | None = None, dtype: torch.dtype = torch.float32) -> Loaded:
    """A causal LM, else a masked LM, else a bare model, with its tokenizer when it has one."""
    tf = _transformers()
    path = Path(source).expanduser()
    where, kw = source, {}
    if path.is_dir():
        where = str(path / revision) if revision else str(path)
        if revision and not (path / revision).is_dir():
            have = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise SigpropError(f"revision {revision!r} is not a subfolder of {path}; subfolders: {', '.join(have) or 'none'}")
    elif revision:
        kw["revision"] = revision
    elif source.startswith((".", "/", "~")):
        raise SigpropError(f"model folder {source} does not exist; accepted: a folder written by save_pretrained, or a hub id")
    try:
        config = tf.AutoConfig.from_pretrained(where, **kw)
    except (OSError, ValueError) as e:
        raise SigpropError(f"cannot load a model from {source!r}{f' at revision {revision!r}' if revision else ''}: "
                           f"{str(e).splitlines()[0]}") from e
    model = None
    for auto in (tf.AutoModelForCausalLM, tf.AutoModelForMaskedLM, tf.AutoModel):
        try:
            model = auto.from_pretrained(where, config=config, dtype=dtype, **kw)
            break
        except ValueError:  # this config has no such head
            continue
    if model is None:
        raise SigpropError(f"{source!r}: transformers has no model class for model_type {config.model_type!r}")
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(where, **kw)
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = None
    label = f"{Path(source).name if path.is_dir() else source}" + (f"@{revision}" if revision else "")
    return Loaded(label, model.eval(), tokenizer)


def code_tokens(tokenizer, batch: int, seq_len: int, seed: int, max_bytes: int | None = None) -> torch.Tensor:
    """`batch` windows of `seq_len` tokens of the stdlib validation split, through the model's own tokenizer."""
    docs = stdlib_corpus(max_bytes=max_bytes).val
    if not docs:
        raise SigpropError("the code corpus has no validation files; raise max_bytes")
    need, ids = 4 * batch * seq_len, []
    sep = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    for doc in docs:
        ids += tokenizer(doc.read(), add_special_tokens=False)["input_ids"] + sep
        if len(ids) >= need:
            break
    if len(ids) < batch * seq_len:
        raise SigpropError(f"the code corpus gives {len(ids)} tokens, fewer than batch x seq_len = {batch * seq_len}")
    stream = torch.tensor(ids)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randperm(len(ids) - seq_len + 1, generator=g)[:batch]
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def vocab_of(model: nn.Module) -> int | None:
    """The token range a model accepts: config.vocab_size (HF), cfg.d_vocab (TransformerLens), else the size of its
    input embedding (`get_input_embeddings()`, else its first nn.Embedding); None when it takes no token ids (a HF model
    whose main input is not input_ids, e.g. pixel_values, or one without an nn.Embedding): it needs inputs=."""
    if getattr(model, "main_input_name", "input_ids") != "input_ids":  # HF vision / audio models
        return None
    for cfg, name in ((getattr(model, "config", None), "vocab_size"), (getattr(model, "cfg", None), "d_vocab")):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    try:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    except NotImplementedError:
        emb = None
    if not isinstance(emb, nn.Embedding):
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return emb.num_embeddings if emb is not None else None


def context_of(model: nn.Module) -> int | None:
    for cfg, names in ((getattr(model, "config", None), ("max_position_embeddings", "n_positions", "context")),
                       (getattr(model, "cfg", None), ("n_ctx",))):
        for name in names:
            v = getattr(cfg, name, None)
            if isinstance(v, int) and v > 0:
                return v
    return None


def model_tokens(loaded: Loaded, data: str, batch: int, seq_len: int, vocab_size: int, seed: int, max_bytes: int | None,
                 inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """(the input batch, description) for one model: `inputs` as given, else token ids (B, T) from the data source."""
    if inputs is not None:
        return inputs, f"the inputs given, {tuple(inputs.shape)}"
    check_choice("data", data, DATA_SOURCES)
    ctx = context_of(loaded.model)
    if ctx is not None and seq_len > ctx:
        raise SigpropError(f"seq_len {seq_len} exceeds {loaded.label}'s context of {ctx} tokens")
    if data == "code" and loaded.tokenizer is not None:
        return code_tokens(loaded.tokenizer, batch, seq_len, seed, max_bytes), "code (stdlib validation split, the model's tokenizer)"
    vocab = vocab_of(loaded.model)
    if vocab is None:
        raise SigpropError(f"cannot infer token ids for {type(loaded.model).__name__} (no vocabulary in its config and no "
                           "nn.Embedding): pass inputs=<a batch the model accepts>, e.g. images (B, 3, H, W)")
    g = torch.Generator().manual_seed(seed)
    if data == "repeat":
        return torch.randint(0, vocab, (batch, 1), generator=g).expand(batch, seq_len).contiguous(), "one token repeated"
    desc = "uniform random tokens" + (" (the model has no tokenizer)" if data == "code" else "")
    return torch.randint(0, vocab, (batch, seq_len), generator=g), desc


def width_of(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "width", "d_model"):
        v = getattr(cfg, name, None)
        if isinstance(v, int):
            return v
    return None


def probe_loaded(loaded: Loaded, tokens: torch.Tensor, kernels: bool, outliers: bool = False,
                 attention: bool = False) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """(tidy measured rows with block = the model's label, mean cosine kernel per layer); outliers=True adds the
    outlier-feature statistics and attention-sink shares, attention=True the attention entropy (per layer, heads
    averaged: `Probe.per_layer`)."""
    probe_points(loaded.model)  # the one-line error for a model without a block stack, before any forward
    p = measure(loaded.model, tokens, kernels=kernels, outliers=outliers, attention=attention)
    m = p.per_layer.assign(block=loaded.label, source="measured")
    kern = {layer: cosine_kernel(torch.from_numpy(k)).mean(0).numpy() for layer, k in p.kernels.items()} if kernels else {}
    return m[["block", "layer", "metric", "value", "source"]], kern
