"""The network computes the reference function, loads strictly, and its fast path agrees."""

from __future__ import annotations

import pytest
import torch

from tests.reference_code import reference_network
from uceindex.errors import ModelFilesError
from uceindex.model.network import PUBLISHED, UCE, published_sizes


def _reference(tiny_model_dir, config):
    return reference_network(config, torch.load(tiny_model_dir / "4layer_model.torch"))


def _sentences(n_tokens: int, lengths: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    L = max(lengths)
    tokens = torch.randint(4, n_tokens, (len(lengths), L), generator=gen)
    tokens[:, 0] = 3
    lengths = torch.tensor(lengths)
    tokens[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths


@torch.inference_mode()
def test_reference_mode_is_the_reference_bit_for_bit(tiny_model, tiny_model_dir):
    net = tiny_model.network
    ref = _reference(tiny_model_dir, net.config)
    tokens, lengths = _sentences(net.config.n_tokens, [90, 85, 70, 90, 40])
    mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).float()
    x = torch.nn.functional.normalize(ref.pe_embedding(tokens.t()), dim=2)
    _, expected = ref(x, mask)
    got = net(tokens, lengths, mode="reference")
    assert torch.equal(got, expected)


@torch.inference_mode()
def test_fast_path_matches_reference_without_padding(tiny_model):
    net = tiny_model.network
    tokens, lengths = _sentences(net.config.n_tokens, [77, 64, 91])
    for i, n in enumerate(lengths.tolist()):
        one, one_len = tokens[i : i + 1, :n], lengths[i : i + 1]
        diff = (net(one, one_len, mode="fast") - net(one, one_len, mode="reference")).abs().max()
        assert diff <= 1e-5


@torch.inference_mode()
def test_fast_path_does_not_depend_on_the_batch(tiny_model):
    net = tiny_model.network
    tokens, lengths = _sentences(net.config.n_tokens, [120, 60, 33, 119])
    batch = net(tokens, lengths, mode="fast")
    alone = torch.cat(
        [
            net(tokens[i : i + 1, :n], lengths[i : i + 1], mode="fast")
            for i, n in enumerate(lengths.tolist())
        ]
    )
    assert (batch - alone).abs().max() <= 1e-6
    # The reference's float mask lets padding move the embedding: the documented difference.
    ref_batch = net(tokens, lengths, mode="reference")
    assert (ref_batch[2] - alone[2]).abs().max() > 1e-4


@torch.inference_mode()
def test_fast_path_with_projected_table(tiny_model):
    net = tiny_model.network
    tokens, lengths = _sentences(net.config.n_tokens, [50, 44])
    table = net.embed_tokens(torch.arange(net.config.n_tokens))
    diff = (net(tokens, lengths, projected=table) - net(tokens, lengths)).abs().max()
    assert diff <= 1e-5


def test_embeddings_are_unit_norm(tiny_model):
    tokens, lengths = _sentences(tiny_model.config.n_tokens, [30, 20])
    with torch.inference_mode():
        norms = tiny_model.network(tokens, lengths).norm(dim=1)
    assert torch.allclose(norms, torch.ones(2), atol=1e-5)


def test_config_is_read_off_the_shapes(tiny_model_dir):
    state = torch.load(tiny_model_dir / "4layer_model.torch")
    config = UCE.config_from_state_dict(state, nhead=2)
    assert (config.token_dim, config.d_model, config.d_hid, config.nlayers, config.output_dim) == (
        32,
        16,
        32,
        2,
        16,
    )
    assert config.decoder_widths == (1024, 16, 16, 16)
    assert config.binary_in == 16 + 1280


def test_strict_loading_names_the_first_mismatch(tiny_model_dir):
    state = torch.load(tiny_model_dir / "4layer_model.torch")
    del state["decoder.3.bias"]
    with pytest.raises(ModelFilesError, match="missing decoder.3.bias"):
        UCE.from_state_dict(state, nhead=2)
    state = torch.load(tiny_model_dir / "4layer_model.torch")
    state["gene_embedding_layer.2.weight"] = torch.ones(3)
    with pytest.raises(ModelFilesError, match="gene_embedding_layer.2.weight has shape"):
        UCE.from_state_dict(state, nhead=2)
    state = torch.load(tiny_model_dir / "4layer_model.torch")
    state["extra.weight"] = torch.ones(3)
    with pytest.raises(ModelFilesError, match="unexpected extra.weight"):
        UCE.from_state_dict(state, nhead=2)


@pytest.mark.parametrize("name,layers", [("4layer", 4), ("33layer", 33)])
def test_published_shapes_build_and_round_trip(name, layers):
    """The official sizes, on the meta device: a state dict of that shape loads strictly."""
    with torch.device("meta"):
        model = UCE(PUBLISHED[name])
    state = model.state_dict()
    assert state["pe_embedding.weight"].shape == (145469, 5120)
    assert state["encoder.0.weight"].shape == (1280, 5120)
    assert state["binary_decoder.0.0.weight"].shape == (2048, 2560)
    assert UCE.config_from_state_dict(state) == PUBLISHED[name]
    assert published_sizes(UCE.config_from_state_dict(state)) == name
    assert published_sizes(UCE.config_from_state_dict(state, nhead=16)) is None  # custom
    assert sum(1 for k in state if k.endswith("self_attn.in_proj_weight")) == layers
