"""The device side of embedding: threads ahead of the model, the projection cache, batch sizes,
out-of-memory handling, the caller's network left where it was, bf16 against float32 on CPU."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import uceindex
from uceindex.embedding import Embedder, batch_tokens
from uceindex.errors import DeviceMemoryError
from uceindex.io.genes import match_genes
from uceindex.model.network import PUBLISHED, UCE
from uceindex.model.tiny import tiny_config


def _counts(adata, model):
    vocab = model.vocab("human")
    return sp.csr_matrix(adata.X, dtype=np.float64), match_genes(adata.var, vocab)


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_threads_ahead_of_the_model_change_nothing(pbmc, tiny_model, threads, monkeypatch):
    monkeypatch.setattr("uceindex.embedding.CHUNK_CELLS", 32)  # several chunks in flight
    alone = uceindex.embed(pbmc[:100].copy(), "human", model=tiny_model, threads=0)
    ahead = uceindex.embed(pbmc[:100].copy(), "human", model=tiny_model, threads=threads)
    assert np.array_equal(alone, ahead)


def test_a_chunk_embeds_to_the_same_bits_whatever_was_cached_before(pbmc, tiny_model):
    """A resumed ingest meets a cold cache: its chunk must give the bits a warm one gave."""
    counts, match = _counts(pbmc, tiny_model)
    first, second = counts[:50], counts[50:100]
    warm = Embedder(tiny_model, device="cpu")
    warm.embed_counts(first, match)
    after_first, _ = warm.embed_counts(second, match)
    cold, _ = Embedder(tiny_model, device="cpu").embed_counts(second, match)
    assert np.array_equal(after_first, cold)


def test_the_callers_network_is_never_moved(tiny_model):
    before = {k: (v.device, v.data_ptr()) for k, v in tiny_model.network.state_dict().items()}
    on_meta = Embedder(tiny_model, device="meta")
    after = {k: (v.device, v.data_ptr()) for k, v in tiny_model.network.state_dict().items()}
    assert after == before
    assert on_meta.network is not tiny_model.network
    assert {t.device.type for t in on_meta.network.state_dict().values()} == {"meta"}
    assert Embedder(tiny_model, device="cpu").network is tiny_model.network  # no copy needed


def test_batch_size_from_free_memory():
    config = PUBLISHED["4layer"]
    cap = 512 * 1100
    assert batch_tokens(config, torch.float32, None, cap) == cap  # CPU: the cap
    per_token = (12 * 1280 + 20 * 1536) * 4
    assert batch_tokens(config, torch.float32, 10 * 2**30, cap) == int(
        0.5 * 10 * 2**30 // per_token
    )
    assert batch_tokens(config, torch.bfloat16, 10 * 2**30, cap) > batch_tokens(
        config, torch.float32, 10 * 2**30, cap
    )
    assert batch_tokens(config, torch.float32, 1, cap) == config.max_len  # at least one sentence


class _SmallDevice(torch.nn.Module):
    """The network, refusing batches of more than `most` sentences as a full GPU would."""

    def __init__(self, network: UCE, most: int):
        super().__init__()
        self.inner, self.most, self.config = network, most, network.config
        self.pe_embedding = network.pe_embedding
        self.seen: list[int] = []

    def embed_tokens(self, tokens):
        return self.inner.embed_tokens(tokens)

    def forward(self, tokens, lengths, **kw):
        self.seen.append(len(tokens))
        if len(tokens) > self.most:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(tokens, lengths, **kw)


def test_out_of_memory_halves_the_batch_and_gives_the_same_answer(small_pbmc, tiny_model):
    counts, match = _counts(small_pbmc, tiny_model)
    expected, _ = Embedder(tiny_model, device="cpu").embed_counts(counts, match)
    embedder = Embedder(tiny_model, device="cpu", tokens_per_batch=64 * 1100)
    embedder.network = _SmallDevice(tiny_model.network, most=5)
    got, _ = embedder.embed_counts(counts, match)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert max(embedder.network.seen) > 5 and embedder.tokens_per_batch < 64 * 1100


def test_one_cell_that_does_not_fit_is_a_clear_error(small_pbmc, tiny_model):
    counts, match = _counts(small_pbmc, tiny_model)
    embedder = Embedder(tiny_model, device="cpu")
    embedder.network = _SmallDevice(tiny_model.network, most=0)
    with pytest.raises(DeviceMemoryError, match="out of memory embedding a single cell") as err:
        embedder.embed_counts(counts[:3], match)
    assert "\n" not in str(err.value) and "--device cpu" in str(err.value)


def _sentences(rng, n_tokens: int, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Random sentences shaped as real ones ([CLS] first, padding after), lengths as given."""
    tokens = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    for i, n in enumerate(lengths):
        tokens[i, 0] = 3
        tokens[i, 1:n] = rng.integers(4, n_tokens, n - 1)
    return tokens, np.asarray(lengths, dtype=np.int64)


@pytest.mark.parametrize(
    "config, lengths",
    [
        (replace(tiny_config(), n_tokens=600), [1070, 1090, 1081, 1536, 400]),
        # the official 4-layer widths; short sentences keep it to seconds on 2 cores, with
        # padding in every batch so that a mask bug shows
        (replace(PUBLISHED["4layer"], n_tokens=600), [96, 130, 64]),
    ],
    ids=["tiny", "4layer-widths"],
)
def test_bf16_autocast_on_cpu_stays_close_to_float32(config, lengths):
    torch.manual_seed(0)
    network = UCE(config).eval()
    tokens, lens = _sentences(np.random.default_rng(0), config.n_tokens, lengths)
    f32 = Embedder(network, device="cpu", precision="float32").embed_sentences(tokens, lens)
    bf16 = Embedder(network, device="cpu", precision="bfloat16").embed_sentences(tokens, lens)
    alone = np.vstack(
        [
            Embedder(network, device="cpu", precision="bfloat16").embed_sentences(
                tokens[i : i + 1, : lens[i]], lens[i : i + 1]
            )
            for i in range(len(lens))
        ]
    )
    cos = (f32 * bf16).sum(axis=1)
    assert cos.min() > 0.99, cos  # bf16 keeps 8 bits of mantissa; a mask or dtype bug gives ~0.9
    assert np.abs(bf16 - alone).max() < 0.02  # padding to the batch width changes little in bf16
