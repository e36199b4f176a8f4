"""pyattn as a transformers attention backend, on tiny models built offline
from configs with seeded random weights (no downloads).

Two levels of checks:

- attention level: every attention call of a model run is also computed by
  the model's own eager attention in float64 on the same q/k/v/mask, and
  pyattn's float32 result must match it to rtol=2e-5, atol=2e-6 (query rows
  with no visible key -- padding positions -- are left out: eager averages
  every value there, pyattn returns zeros; nothing reads those rows);
- model level: logits against eager attention in float32. Both pyattn and
  torch's sdpa sum in another order than eager's matmul/softmax; through a
  few layers those float32 roundings grow to ~1e-6 on logits of unit scale
  (sdpa vs eager is measured beside pyattn vs eager and printed on failure),
  so logits are compared with atol=2e-5, rtol=2e-5; greedy generate() must
  give identical tokens.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pyattn.integrations.transformers as pyattn_hf  # noqa: E402

pytestmark = pytest.mark.integration

LOGITS_TOL = dict(atol=2e-5, rtol=2e-5)
ATTN_TOL = dict(atol=2e-6, rtol=2e-5)


class AttentionChecker:
    """An attention function for transformers that runs pyattn's and checks
    each call against the model's eager attention in float64."""

    def __init__(self, eager_fn):
        self.eager_fn = eager_fn
        self.calls = 0
        self.max_diff = 0.0

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        out, weights = pyattn_hf.attention_forward(module, query, key, value, attention_mask, **kwargs)
        mask64 = None
        visible_rows = None
        if attention_mask is not None:
            m = attention_mask[..., : key.shape[2]]
            if m.dtype == torch.bool:
                mask64 = torch.zeros(m.shape, dtype=torch.float64).masked_fill(~m, -torch.inf)
                visible_rows = m.any(-1)  # (B, 1, L)
            else:
                mask64 = m.double()
        kw = {k: v for k, v in kwargs.items() if k in ("scaling", "dropout", "softcap", "sliding_window")}
        saved = None
        if hasattr(module, "sinks"):
            saved = module.sinks
            module.sinks = torch.nn.Parameter(saved.detach().double(), requires_grad=False)
        try:
            q, k, v = query.double(), key.double(), value.double()
            if attention_mask is None and getattr(module, "is_causal", True) and q.shape[2] > 1:
                L, S = q.shape[2], k.shape[2]
                causal = torch.ones(L, S, dtype=torch.bool).tril()
                mask64 = torch.zeros(L, S, dtype=torch.float64).masked_fill(~causal, -torch.inf)
            ref, ref_w = self.eager_fn(module, q, k, v, mask64, **kw)
        finally:
            if saved is not None:
                module.sinks = saved
        got = out.double()
        if visible_rows is not None:  # (B, L, H, E) rows of queries that see a key
            rows = visible_rows[:, 0, :, None, None].expand_as(got)
            got, ref = got[rows], ref[rows]
        np.testing.assert_allclose(got.numpy(), ref.numpy(), **ATTN_TOL)
        self.max_diff = max(self.max_diff, float((got - ref).abs().max()) if got.numel() else 0.0)
        self.calls += 1
        return out, weights


@pytest.fixture(scope="module", autouse=True)
def registered():
    pyattn_hf.register("pyattn")
    yield


def _eager_fn(model):
    mod = __import__(type(model).__module__, fromlist=["eager_attention_forward"])
    return mod.eager_attention_forward


def _check_layers(model, **inputs):
    checker = AttentionChecker(_eager_fn(model))
    transformers.AttentionInterface.register("pyattn_checked", checker)
    transformers.AttentionMaskInterface.register("pyattn_checked", pyattn_hf.attention_mask)
    model.set_attn_implementation("pyattn_checked")
    with torch.inference_mode():
        model(**inputs)
    assert checker.calls >= model.config.num_hidden_layers
    return checker.max_diff


def _logits(model, impl, **inputs):
    model.set_attn_implementation(impl)
    with torch.inference_mode():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _batch(vocab, B=3, L=13, pad=(0, 5, 2), seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    for b, p in enumerate(pad):
        mask[b, :p] = 0  # left padding
        ids[b, :p] = 0
    return ids, mask


def _compare_causal_lm(model, L=13):
    ids, mask = _batch(model.config.vocab_size, L=L)
    valid = mask.bool()
    eager = _logits(model, "eager", input_ids=ids, attention_mask=mask)
    got = _logits(model, "pyattn", input_ids=ids, attention_mask=mask)
    try:  # (sdpa has no softcap, and some models -- gpt-oss -- do not offer it)
        sdpa = _logits(model, "sdpa", input_ids=ids, attention_mask=mask)
        d_sdpa = f"{float((sdpa - eager)[valid].abs().max()):.3g}"
    except ValueError:
        d_sdpa = "n/a"
    d_pyattn = float((got - eager)[valid].abs().max())
    np.testing.assert_allclose(got[valid].numpy(), eager[valid].numpy(), **LOGITS_TOL,
                               err_msg=f"sdpa vs eager: {d_sdpa}")
    layer_diff = _check_layers(model, input_ids=ids, attention_mask=mask)

    gens = {}
    for impl in ("eager", "pyattn"):
        model.set_attn_implementation(impl)
        with torch.inference_mode():
            gens[impl] = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                                        pad_token_id=0)
    assert torch.equal(gens["pyattn"], gens["eager"])
    print(f"\n{type(model).__name__}: logits max |pyattn - eager| {d_pyattn:.3g}, "
          f"|sdpa - eager| {d_sdpa}; attention calls max |pyattn - eager64| {layer_diff:.3g}; "
          "generate() equal")
    return d_pyattn


def _seeded(cls, config):
    torch.manual_seed(0)
    return cls(config).eval()


def test_llama_gqa():
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128)
    _compare_causal_lm(_seeded(transformers.LlamaForCausalLM, cfg))


def test_mistral_sliding_window():
    # A window of 5 keys over 13-token prompts and 10 generated tokens: the
    # window cuts both the prefill and the decoding steps.
    cfg = transformers.MistralConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, sliding_window=5)
    _compare_causal_lm(_seeded(transformers.MistralForCausalLM, cfg))


def test_qwen2_sliding_layers():
    cfg = transformers.Qwen2Config(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        use_sliding_window=True, sliding_window=6, max_window_layers=1)
    model = _seeded(transformers.Qwen2ForCausalLM, cfg)
    assert "sliding_attention" in model.config.layer_types
    _compare_causal_lm(model)


def test_gemma2_softcap_alternating_sliding():
    cfg = transformers.Gemma2Config(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        sliding_window=5, attn_logit_softcapping=2.0, final_logit_softcapping=30.0,
        query_pre_attn_scalar=16)
    model = _seeded(transformers.Gemma2ForCausalLM, cfg)
    assert model.config.layer_types[:2] == ["sliding_attention", "full_attention"]
    _compare_causal_lm(model)


@pytest.mark.skipif(not hasattr(transformers, "GptOssForCausalLM"), reason="this transformers has no gpt-oss")
def test_gpt_oss_sinks():
    cfg = transformers.GptOssConfig(
        vocab_size=101, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        sliding_window=5, num_local_experts=4, num_experts_per_tok=2)
    model = _seeded(transformers.GptOssForCausalLM, cfg)
    with torch.no_grad():  # sinks large enough to matter
        for layer in model.model.layers:
            layer.self_attn.sinks.normal_(0.0, 2.0)
    _compare_causal_lm(model)


def test_bert_padding_mask():
    cfg = transformers.BertConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64)
    model = _seeded(transformers.BertModel, cfg)
    ids, mask = _batch(cfg.vocab_size, L=11, pad=(0, 4, 1))
    mask = mask.flip(1)  # right padding, as tokenizers pad encoder inputs
    valid = mask.bool()
    eager = _logits(model, "eager", input_ids=ids, attention_mask=mask)
    got = _logits(model, "pyattn", input_ids=ids, attention_mask=mask)
    np.testing.assert_allclose(got[valid].numpy(), eager[valid].numpy(), **LOGITS_TOL)
    _check_layers(model, input_ids=ids, attention_mask=mask)
    print(f"\nBertModel: hidden states max |pyattn - eager| {float((got - eager)[valid].abs().max()):.3g}")


def test_output_attentions_weights():
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = _seeded(transformers.LlamaForCausalLM, cfg)
    ids, mask = _batch(cfg.vocab_size, L=9, pad=(0, 3, 1))
    res = {}
    for impl in ("eager", "pyattn"):
        model.set_attn_implementation(impl)
        with torch.inference_mode():
            res[impl] = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert len(res["pyattn"]) == cfg.num_hidden_layers
    rows = mask.bool()[:, None, :, None]  # weights of query rows that are not padding
    for got, ref in zip(res["pyattn"], res["eager"]):
        assert got.shape == ref.shape
        r = rows.expand_as(got)
        np.testing.assert_allclose(got[r].numpy(), ref[r].numpy(), atol=1e-6, rtol=1e-5)
        # padding rows see no key: zeros (eager spreads them uniformly)
        assert torch.all(got[~r] == 0)


def test_bfloat16_model_runs():
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = _seeded(transformers.LlamaForCausalLM, cfg).to(torch.bfloat16)
    ids, mask = _batch(cfg.vocab_size)
    valid = mask.bool()
    eager = _logits(model, "eager", input_ids=ids, attention_mask=mask).float()
    got = _logits(model, "pyattn", input_ids=ids, attention_mask=mask)
    assert got.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits: activations differ by the rounding of q/k/v,
    # weights and outputs at every layer (eager rounds its probabilities to
    # bfloat16 too, pyattn keeps them in float32).
    np.testing.assert_allclose(got.float()[valid].numpy(), eager[valid].numpy(), atol=0.05, rtol=0.05)
    with torch.inference_mode():
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert gen.shape == (3, 18)


def test_grad_mode_is_refused():
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = _seeded(transformers.LlamaForCausalLM, cfg)
    model.set_attn_implementation("pyattn")
    with pytest.raises(ValueError, match="requires grad"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


def test_training_dropout_is_refused():
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        attention_dropout=0.1)
    model = _seeded(transformers.LlamaForCausalLM, cfg).train()
    model.set_attn_implementation("pyattn")
    with torch.no_grad(), pytest.raises(ValueError, match="dropout"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


def test_register_name_and_from_config():
    assert pyattn_hf.register("pyattn_other") == "pyattn_other"
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="pyattn_other").eval()
    assert model.config._attn_implementation == "pyattn_other"
    with pytest.raises(TypeError):
        pyattn_hf.register("")
