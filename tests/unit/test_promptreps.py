"""PromptReps (issue 16, item 1): the dense and sparse representations, hybrid fusion, the incremental index
and the cache, and the search method; with a tiny random Llama built here (the bundled SmolLM2 is tested in
tests/integration/test_promptreps.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from storage.sparse import SparseMatrix, _csr
from tasks.ingest.promptreps import (
    TOP_TERMS,
    PromptReps,
    Reps,
    index_promptreps,
    own_words,
    pack,
    unpack,
)
from tasks.methods.promptreps import PromptRepsParams, retrieve_promptreps
from tasks.methods.registry import parse_method
from tests.fakes import fake_workspace, make_docs

WORDS = (
    (
        "wing flow heat shock boundary layer mach pressure lift drag title term passage query use one most "
        "important word to represent the in retrieval task make sure your is lowercase you are an ai "
        "assistant that can understand human language system user"
    ).split()
    + [f"term{i}" for i in range(12)]
    + [str(i) for i in range(12)]
    + [f"w{i}" for i in range(200)]
)
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_tokenizer():
    """A word-level fast tokenizer over :data:`WORDS` with a chat template: offline and instant."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", '"', ".", ":"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*specials, *WORDS]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": specials[2:6]})
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def tiny_lm(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def encoder() -> PromptReps:
    tokenizer = tiny_tokenizer()
    return PromptReps(tiny_lm(len(tokenizer)), tokenizer, "tiny-llama", "r1", batch_size=4)


def direct(encoder: PromptReps, text: str, *, queries: bool) -> tuple[np.ndarray, torch.Tensor]:
    """The last layer's hidden state (normalised) and the logits at the last position, one text alone."""
    batch = encoder.tokenizer([encoder.prompt(text, queries=queries)], return_tensors="pt")
    with torch.inference_mode():
        out = encoder.model(**batch, output_hidden_states=True)
    hidden = out.hidden_states[-1][0, -1].float()
    return (hidden / hidden.norm()).numpy(), out.logits[0, -1].float()


TEXTS = ["wing flow", "the boundary layer of a wing in shock and heat at mach 3", "lift and drag"]


def test_the_dense_vector_is_the_last_hidden_state_at_the_last_prompt_position(encoder):
    # three lengths in one batch: left padding must not move any row's vector
    reps = encoder.represent(TEXTS, queries=False)
    for text, vector in zip(TEXTS, reps.dense, strict=True):
        expected, _ = direct(encoder, text, queries=False)
        np.testing.assert_allclose(vector, expected, atol=1e-5)
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)
    assert encoder.prompt("x", queries=False).endswith('<|assistant|> The word is: "')
    assert 'Passage: "x"' in encoder.prompt("x", queries=False)
    assert 'Query: "x"' in encoder.prompt("x", queries=True)


def test_sparse_weights_are_log1p_relu_of_the_logits_on_the_texts_own_words_only(encoder):
    text = TEXTS[1]
    reps = encoder.represent([text], queries=False)
    _, logits = direct(encoder, text, queries=False)
    own = {encoder.tokenizer.convert_tokens_to_ids(w) for w in own_words(text)}
    assert own_words(text) == ["boundary", "layer", "wing", "shock", "heat", "mach", "3"]  # stop words gone
    weights = torch.log1p(torch.relu(logits))
    assert set(reps.sparse[0]) == {t for t in own if weights[t] > 0}
    for token, weight in reps.sparse[0].items():
        assert weight == pytest.approx(float(weights[token]), abs=1e-5)


def test_sparse_keeps_the_top_128_of_the_texts_tokens(encoder):
    text = " ".join(f"w{i}" for i in range(200))
    [vector] = encoder.represent([text], queries=False).sparse
    _, logits = direct(encoder, text, queries=False)
    weights = torch.log1p(torch.relu(logits))
    own = torch.tensor([encoder.tokenizer.convert_tokens_to_ids(f"w{i}") for i in range(200)])
    best = own[weights[own].topk(TOP_TERMS).indices]
    assert set(vector) == {int(t) for t in best if weights[t] > 0}
    assert 0 < len(vector) <= TOP_TERMS


def test_expansion_adds_the_best_alphabetic_tokens_from_outside_the_text(encoder):
    expanded = PromptReps(encoder.model, encoder.tokenizer, "tiny-llama", "r1", expand=5)
    [plain] = encoder.represent(["wing flow"], queries=True).sparse
    [more] = expanded.represent(["wing flow"], queries=True).sparse
    added = set(more) - set(plain)
    assert plain.items() <= more.items()
    assert 0 < len(added) <= 5
    _, logits = direct(encoder, "wing flow", queries=True)
    own = {encoder.tokenizer.convert_tokens_to_ids(w) for w in ("wing", "flow")}
    tokens = encoder.tokenizer.convert_ids_to_tokens(sorted(added))
    assert all(t[0].isalpha() or t.isdigit() for t in tokens) and not added & own
    weights = torch.log1p(torch.relu(logits))
    outside = [i for i in expanded._vocabulary.tolist() if i not in own]
    assert (
        min(weights[t] for t in added) >= sorted((float(weights[i]) for i in outside), reverse=True)[4] - 1e-6
    )
    assert expanded.space.key != encoder.space.key  # another sparse vector, another space and cache


def test_pack_and_unpack_keep_both_representations():
    reps = Reps(np.eye(2, 4, dtype=np.float32), [{3: 0.5, 49_000: 1.25}, {}])
    back = unpack(pack(reps, slots=3), hidden=4)
    np.testing.assert_array_equal(back.dense, reps.dense)
    assert back.sparse == reps.sparse


def test_sparse_search_is_the_exact_dot_product():
    rows = [{1: 1.0, 2: 2.0}, {2: 0.5, 7: 4.0}, {9: 1.0}]
    matrix = SparseMatrix(
        doc_ids=np.array(["a", "b", "c"], dtype=object),
        kinds=np.array(["chunk"] * 3, dtype=object),
        weights=_csr(rows, 10),
    )
    [hits] = matrix.top([{2: 1.0, 7: 0.25, 50: 9.0}], 3, ["chunk"])
    assert hits == [("a", 2.0), ("b", 1.5)]  # c shares no term; token 50 is in no view


class FixedRetriever:
    def __init__(self, dense, sparse):
        self.rankings = (dense, sparse)
        self.asked = []

    def search_promptreps(self, texts, k, *, dense, sparse):
        self.asked.append((k, dense, sparse))
        return ([self.rankings[0]] if dense else [], [self.rankings[1]] if sparse else [])


def test_hybrid_is_the_min_max_normalised_weighted_sum():
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]
    sparse = [("c", 10.0), ("a", 4.0), ("d", 2.0)]
    retriever = FixedRetriever(dense, sparse)
    params = PromptRepsParams(mode="hybrid", alpha=0.3)
    [(_, fused)] = retrieve_promptreps(retriever, params, {"q": "x"}, 4).items()
    expected = {
        "a": 0.3 * 1.0 + 0.7 * (4 - 2) / 8,
        "b": 0.3 * 0.5,
        "c": 0.3 * 0.0 + 0.7 * 1.0,
        "d": 0.7 * 0.0,
    }
    assert [d for d, _ in fused] == ["c", "a", "b", "d"]
    assert dict(fused) == pytest.approx(expected)
    assert retriever.asked == [(1000, True, True)]
    only = retrieve_promptreps(retriever, PromptRepsParams(mode="sparse"), {"q": "x"}, 2)
    assert only == {"q": sparse} and retriever.asked[-1] == (2, False, True)
    assert str(parse_method("promptreps(mode=dense, alpha=0.5)")) == "promptreps(mode=dense)"


class Counting(PromptReps):
    def __init__(self, base: PromptReps) -> None:
        super().__init__(base.model, base.tokenizer, "tiny-llama", "r1")
        self.seen: list[str] = []

    def represent(self, texts, *, queries):
        self.seen += texts
        return super().represent(texts, queries=queries)


def test_the_index_is_incremental_and_cached(tmp_path, monkeypatch, encoder):
    from tasks.ingest.index import reindex
    from tests.fakes import FakeEmbedder

    counting = Counting(encoder)
    with fake_workspace(tmp_path, monkeypatch) as ws:
        first = index_promptreps(ws.store, "c", counting)
        assert (first.added, first.chunks_encoded, first.unchanged) == (12, 12, 0)
        assert len(counting.seen) == 12 and first.tokens > 0

        again = index_promptreps(ws.store, "c", counting)
        assert (again.added, again.chunks_encoded, again.unchanged) == (0, 0, 12)
        assert len(counting.seen) == 12  # nothing re-encoded

        docs = make_docs(12)
        docs[3] = type(docs[3])("d3", "title 3", "wing lift changed", {"n": 3}, "mem:3")
        fake = FakeEmbedder()
        reindex(ws.store, "c", docs[:11], fake.space, lambda: fake)  # d3 changed, d11 gone
        counting.seen.clear()
        update = index_promptreps(ws.store, "c", counting)
        assert (update.added, update.deleted, update.unchanged) == (1, 1, 10)
        assert counting.seen == ["title 3 wing lift changed"]  # only the changed chunk, by its text
        stored = ws.store.views.hashes("c", counting.space)
        assert "d11" not in stored and stored["d3"] == {("chunk", docs[3].content_hash)}

        # another corpus with the same text: from the cache, never encoded
        reindex(ws.store, "other", docs[:2], fake.space, lambda: fake)
        counting.seen.clear()
        other = index_promptreps(ws.store, "other", counting)
        assert (other.chunks_encoded, other.chunks_cached, counting.seen) == (0, 2, [])


def test_search_ranks_documents_by_their_best_chunk_and_names_a_missing_index(tmp_path, monkeypatch, encoder):
    with fake_workspace(tmp_path, monkeypatch) as ws:
        monkeypatch.setattr(type(ws), "promptreps", encoder)
        with pytest.raises(LookupError, match="zsr promptreps index c"):
            ws.search("c", "term5 wing", method="promptreps")
        ws.index_promptreps("c")
        for mode in ("dense", "sparse", "hybrid"):
            hits = ws.search("c", "term5 wing", method=f"promptreps(mode={mode})", k=5)
            assert 0 < len(hits) <= 5 and len({d for d, _ in hits}) == len(hits)
        sparse = ws.search("c", "term5", method="promptreps(mode=sparse)", k=3)
        assert sparse[0][0] == "d5"  # the one document holding the word
        with pytest.raises(ValueError, match="--where"):
            ws.search("c", "wing", method="promptreps", where="n > 3")
