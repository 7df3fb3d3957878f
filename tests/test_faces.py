"""LaPIG's face half (identity-conditioned generation): identity injection into the text encoder."""

import copy

import pytest
import torch

from thermosynth.models.identity import ID_PROMPT, IdentityInjection

from conftest import byte_level_clip_vocab


@pytest.fixture(scope="module")
def clip_with_id_token():
    """A random CLIP text model (width 48) whose tokenizer reads `id` as one token, as CLIP's own vocabulary does."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = byte_level_clip_vocab()
    vocab["id</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[("i", "d</w>")], model_max_length=77)
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )).eval()
    return tokenizer, model


def test_the_identity_vector_sits_where_the_id_token_was(clip_with_id_token):
    tokenizer, model = clip_with_id_token
    inject = IdentityInjection(tokenizer, model)
    identity = torch.randn(2, 16) * 3  # e.g. SFace's 128-d in a 768-d CLIP: here 16-d into 48
    with torch.no_grad():
        states = inject(identity)
    ids = tokenizer([ID_PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
    padded = inject.padded(identity)
    assert torch.allclose(padded[:, :16].norm(dim=1), torch.ones(2)) and torch.all(padded[:, 16:] == 0)
    for row in range(2):  # the same as a text encoder whose `id` embedding row were this identity
        edited = copy.deepcopy(model)
        edited.get_input_embeddings().weight.data[inject.token_id] = padded[row]
        with torch.no_grad():
            expected = edited(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(states[row], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(states[0], states[1], atol=1e-3)  # the identity changes the token states
    with torch.no_grad():
        plain = model(input_ids=ids).last_hidden_state[0]
        assert not torch.allclose(states[0], plain, atol=1e-3)
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state[0], plain)  # the hook was removed


def test_identity_injection_refuses_what_it_cannot_place(clip_with_id_token):
    tokenizer, model = clip_with_id_token
    inject = IdentityInjection(tokenizer, model)
    with pytest.raises(ValueError, match="exactly once"):
        inject(torch.randn(1, 16), prompt="photo of a person")
    with pytest.raises(ValueError, match="d <= 48"):
        inject(torch.randn(1, 64))
    with pytest.raises(ValueError, match="one"):
        IdentityInjection(tokenizer, model, token="identity")
