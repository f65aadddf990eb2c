"""Every divergence against its textbook formula (values and gradients), full-logit and chunked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart.errors import ConfigError
from headstart.training.kd_loss import (
    KDConfig,
    TopK,
    chunked_kd_loss,
    divergence,
    forward_kl,
    jsd,
    kd_loss,
    reverse_kl,
    topk_divergence,
)

torch.set_default_dtype(torch.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def textbook(student: np.ndarray, teacher: np.ndarray, kind: str, t: float, beta: float = 0.5) -> np.ndarray:
    """Per-row divergence written out in float64 numpy, straight from the definitions."""
    p, q = _softmax(teacher / t), _softmax(student / t)
    kl = lambda a, b: (a * (np.log(a) - np.log(b))).sum(-1)  # noqa: E731
    if kind == "forward":
        return kl(p, q)
    if kind == "reverse":
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def naive_torch(student: torch.Tensor, teacher: torch.Tensor, kind: str, t: float, beta: float) -> torch.Tensor:
    """The same formulas in float64 torch, for autograd reference gradients."""
    p, q = torch.softmax(teacher.double() / t, -1), torch.softmax(student.double() / t, -1)
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1)  # noqa: E731
    if kind == "forward":
        return kl(p, q)
    if kind == "reverse":
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def naive_loss(h, w, th, tw, labels, cfg, vocab):
    """alpha*CE + (1-alpha)*T^2*D, mean over valid tokens, from full float64 logits."""
    z, tz = h.double() @ w.double().t(), th.double() @ tw.double().t()
    valid = labels != cfg.ignore_index
    ce = torch.nn.functional.cross_entropy(z, labels, ignore_index=cfg.ignore_index, reduction="sum")
    loss = cfg.ce_weight * ce
    if cfg.uses_teacher:
        d = naive_torch(z[:, :vocab], tz[:, :vocab], cfg.kind, cfg.temperature, cfg.beta)
        loss = loss + cfg.kd_weight * (d * valid).sum()
    return loss / valid.sum()


@pytest.mark.parametrize("t", [1.0, 2.5])
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_divergence_values_match_textbook(kind, t):
    g = torch.Generator().manual_seed(1)
    s, te = torch.randn(5, 17, generator=g) * 3, torch.randn(5, 17, generator=g) * 3
    want = textbook(s.numpy().astype(np.float64), te.numpy().astype(np.float64), kind, t, beta=0.3)
    got = divergence(s, te, kind, t, beta=0.3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)
    assert (want > 0).all()


def test_named_divergences_and_direction():
    g = torch.Generator().manual_seed(2)
    s, te = torch.randn(4, 9, generator=g) * 2, torch.randn(4, 9, generator=g) * 2
    sn, tn = s.numpy().astype(np.float64), te.numpy().astype(np.float64)
    np.testing.assert_allclose(forward_kl(s, te, 1.5).numpy(), textbook(sn, tn, "forward", 1.5), rtol=1e-4)
    np.testing.assert_allclose(reverse_kl(s, te, 1.5).numpy(), textbook(sn, tn, "reverse", 1.5), rtol=1e-4)
    np.testing.assert_allclose(jsd(s, te, 0.2).numpy(), textbook(sn, tn, "jsd", 1.0, 0.2), rtol=1e-4)
    # forward and reverse KL really differ (a swapped direction would fail one of the checks above)
    assert not np.allclose(textbook(sn, tn, "forward", 1.0), textbook(sn, tn, "reverse", 1.0), rtol=1e-2)
    # JSD(beta) weights the teacher by beta: JSD_beta(p||q) = JSD_{1-beta}(q||p)
    np.testing.assert_allclose(jsd(s, te, 0.2).numpy(), jsd(te, s, 0.8).numpy(), rtol=1e-4)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_divergence_gradients_match_naive(kind):
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(6, 13, generator=g) * 2).requires_grad_()
    te = torch.randn(6, 13, generator=g) * 2
    weights = torch.rand(6, generator=g)
    (divergence(s, te, kind, 2.0, 0.4) * weights).sum().backward()
    s64 = s.detach().double().requires_grad_()
    (naive_torch(s64, te, kind, 2.0, 0.4) * weights.double()).sum().backward()
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)


def _problem(n=37, hid=8, vocab=23, t_vocab=None, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hid, generator=g, requires_grad=True)
    w = (torch.randn(vocab, hid, generator=g) * 0.7).requires_grad_()
    th = torch.randn(n, hid + 4, generator=g)
    tw = torch.randn(t_vocab or vocab, hid + 4, generator=g) * 0.7
    labels = torch.randint(0, min(vocab, t_vocab or vocab), (n,), generator=g)
    if ignore:
        labels[::7] = -100
    return h, w, th, tw, labels


@pytest.mark.parametrize("cfg", [
    KDConfig("forward", alpha=0.3, temperature=1.0),
    KDConfig("forward", alpha=0.0, temperature=2.0),
    KDConfig("reverse", alpha=0.5, temperature=1.7),
    KDConfig("reverse", alpha=0.5, temperature=1.0),
    KDConfig("jsd", alpha=0.2, temperature=1.3, beta=0.25),
    KDConfig("jsd", alpha=0.7, temperature=1.0, beta=0.6),
    KDConfig("none"),
])
def test_chunked_matches_naive_values_and_gradients(cfg):
    h, w, th, tw, labels = _problem()
    want = naive_loss(h, w, th, tw, labels, cfg, 23)
    gh, gw = torch.autograd.grad(want, [h, w])
    got = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, chunk=5)
    assert float(got.n_tokens) == float((labels != -100).sum())
    torch.testing.assert_close(got.loss.double(), want, rtol=1e-5, atol=1e-6)
    got.loss.backward()
    torch.testing.assert_close(h.grad, gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.grad, gw, rtol=1e-4, atol=1e-6)
    # the full-logit autograd form agrees too
    ref = kd_loss(h @ w.t(), labels, cfg, teacher_logits=th @ tw.t())
    torch.testing.assert_close(ref.loss.double(), want, rtol=1e-5, atol=1e-6)


def test_chunked_with_linear_heads_bias_and_normalizer():
    h, w, th, tw, labels = _problem(ignore=False)
    head = torch.nn.Linear(8, 23, bias=True)
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.normal_()
    cfg = KDConfig("jsd", alpha=0.4, temperature=1.0, beta=0.5)
    got = chunked_kd_loss(h, head, labels, cfg, teacher_hidden=th, teacher_head=tw, normalizer=100.0, chunk=8)
    ref = kd_loss(head(h), labels, cfg, teacher_logits=th @ tw.t(), normalizer=100.0)
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-5, atol=1e-6)
    got.loss.backward()
    gb = head.bias.grad.clone()
    head.bias.grad = None
    ref2 = kd_loss(head(h.detach()), labels, cfg, teacher_logits=th @ tw.t(), normalizer=100.0)
    ref2.loss.backward()
    torch.testing.assert_close(gb, head.bias.grad, rtol=1e-4, atol=1e-6)


def test_padded_student_vocabulary_compares_over_shared_vocab():
    """Student head has 5 padded rows: KD uses the first 23 entries, CE the whole head."""
    h, w, th, tw, labels = _problem(vocab=28, t_vocab=23)
    cfg = KDConfig("forward", alpha=0.5, temperature=2.0)
    want = naive_loss(h, w, th, tw, labels, cfg, 23)
    got = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, vocab=23, chunk=6)
    torch.testing.assert_close(got.loss.double(), want, rtol=1e-5, atol=1e-6)
    gh = torch.autograd.grad(want, h)[0]
    got.loss.backward()
    torch.testing.assert_close(h.grad, gh, rtol=1e-4, atol=1e-6)


def _topk(teacher_logits: torch.Tensor, k: int) -> TopK:
    lp = torch.log_softmax(teacher_logits.float(), -1)
    vals, idx = lp.topk(k, -1)
    rest = lp.scatter(-1, idx, float("-inf")).logsumexp(-1)
    return TopK(vals.half(), idx.to(torch.int32), rest)


def naive_bucket_loss(h, w, topk, labels, cfg):
    """Textbook loss over k + 1 buckets (top-k tokens + the rest) in float64."""
    z = h.double() @ w.double().t()
    t = cfg.temperature
    q = torch.softmax(z / t, -1)
    idx = topk.index.long()
    q_k = q.gather(-1, idx)
    qb = torch.cat([q_k, (1 - q_k.sum(-1, keepdim=True)).clamp_min(1e-300)], -1)
    pb = torch.softmax(torch.cat([topk.logp.double(), topk.log_rest.double()[:, None]], -1) / t, -1)
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1)  # noqa: E731
    if cfg.kind == "forward":
        d = kl(pb, qb)
    elif cfg.kind == "reverse":
        d = kl(qb, pb)
    else:
        m = cfg.beta * pb + (1 - cfg.beta) * qb
        d = cfg.beta * kl(pb, m) + (1 - cfg.beta) * kl(qb, m)
    valid = labels != -100
    ce = torch.nn.functional.cross_entropy(z, labels, reduction="sum")
    return (cfg.ce_weight * ce + cfg.kd_weight * (d * valid).sum()) / valid.sum()


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_topk_bucket_loss_matches_textbook(kind):
    h, w, th, tw, labels = _problem(ignore=False)
    topk = _topk(th @ tw.t(), k=5)
    cfg = KDConfig(kind, alpha=0.3, temperature=1.5, beta=0.3)
    want = naive_bucket_loss(h, w, topk, labels, cfg)
    got = chunked_kd_loss(h, w, labels, cfg, topk=topk, chunk=7)
    torch.testing.assert_close(got.loss.double(), want, rtol=1e-5, atol=1e-6)
    gh, gw = torch.autograd.grad(want, [h, w])
    got.loss.backward()
    torch.testing.assert_close(h.grad, gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.grad, gw, rtol=1e-4, atol=1e-6)
    # the full-logit autograd form of the bucket divergence agrees
    d = topk_divergence((h @ w.t()).detach(), topk, kind, 1.5, 0.3)
    assert torch.isfinite(d).all() and (d >= 0).all()


@pytest.mark.parametrize("t", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_topk_with_k_equal_vocab_is_the_online_loss(kind, t):
    h, w, th, tw, labels = _problem()
    tz = th @ tw.t()
    lp = torch.log_softmax(tz, -1)
    vals, idx = lp.topk(23, -1)
    topk = TopK(vals, idx, torch.full((h.shape[0],), float("-inf")))
    cfg = KDConfig(kind, alpha=0.25, temperature=t, beta=0.6)
    online = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, chunk=9)
    gh = torch.autograd.grad(online.loss, h)[0]
    cached = chunked_kd_loss(h, w, labels, cfg, topk=topk, chunk=4)
    torch.testing.assert_close(cached.loss, online.loss, rtol=1e-5, atol=1e-6)
    gh2 = torch.autograd.grad(cached.loss, h)[0]
    assert torch.isfinite(gh2).all()
    torch.testing.assert_close(gh2, gh, rtol=1e-4, atol=1e-6)


def test_eval_mode_skips_gradients_and_bad_config_is_refused():
    h, w, th, tw, labels = _problem()
    with torch.no_grad():
        got = chunked_kd_loss(h, w, labels, KDConfig("reverse"), teacher_hidden=th, teacher_head=tw)
    assert not got.loss.requires_grad and torch.isfinite(got.loss)
    with pytest.raises(ConfigError, match="kind 'kl' is not one of forward"):
        KDConfig("kl")
    with pytest.raises(ConfigError, match="beta must be below 1"):
        KDConfig("jsd", beta=1.0)
    with pytest.raises(ConfigError, match="teacher"):
        chunked_kd_loss(h, w, labels, KDConfig("forward"))


@pytest.mark.parametrize("cfg", [KDConfig("forward", alpha=0.5), KDConfig("forward", alpha=0.2, temperature=2.0),
                                 KDConfig("jsd", alpha=0.5, temperature=1.5)])
def test_chunked_under_bf16_autocast_runs_its_products_in_bf16_close_to_fp32(cfg):
    """Under autocast the head's products run in bf16 (fast on AVX512-BF16 CPUs and GPUs), the softmax
    arithmetic in fp32; the loss and gradients stay close to fp32 and keep their dtypes."""
    h, w, th, tw, labels = _problem(n=64, hid=16, vocab=50)
    want = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, chunk=9)
    gh, gw = torch.autograd.grad(want.loss, [h, w])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, chunk=9)
    got.loss.backward()
    assert got.loss.dtype == h.grad.dtype == w.grad.dtype == torch.float32
    assert got.loss.item() != want.loss.item()  # bf16 products really ran
    torch.testing.assert_close(got.loss, want.loss, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(h.grad, gh, rtol=5e-2, atol=5e-3)
    torch.testing.assert_close(w.grad, gw, rtol=5e-2, atol=5e-3)


def _cap(z: torch.Tensor, cap: float | None) -> torch.Tensor:
    return z if cap is None else cap * torch.tanh(z / cap)


@pytest.mark.parametrize(("caps", "cfg"), [
    ((3.0, 2.0), KDConfig("forward", alpha=0.3, temperature=1.0)),
    ((3.0, None), KDConfig("forward", alpha=0.5, temperature=2.0)),
    ((None, 2.5), KDConfig("reverse", alpha=0.4, temperature=1.5)),
    ((2.0, 2.0), KDConfig("jsd", alpha=0.2, temperature=1.0, beta=0.3)),
    ((1.5, None), KDConfig("none")),
])
def test_soft_capped_logits_match_autograd_on_the_capped_full_logits(caps, cfg):
    """Final-logit soft-capping (Gemma 2: ``cap * tanh(z / cap)``) on either side, inside the chunked loss."""
    cap, t_cap = caps
    h, w, th, tw, labels = _problem()
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    z, tz = _cap(h64 @ w64.t(), cap), _cap(th.double() @ tw.double().t(), t_cap)
    want = kd_loss(z, labels, cfg, teacher_logits=tz)
    gh, gw = torch.autograd.grad(want.loss, [h64, w64])
    got = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, chunk=6, softcap=cap,
                          teacher_softcap=t_cap)
    torch.testing.assert_close(got.loss.double(), want.loss.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.kd_sum.double(), want.kd_sum.double(), rtol=1e-5, atol=1e-5)
    got.loss.backward()
    torch.testing.assert_close(h.grad.double(), gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), gw, rtol=1e-4, atol=1e-6)
    plain = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, chunk=6)
    assert abs(plain.loss.item() - got.loss.item()) > 1e-3  # the cap really changed the loss


def test_soft_capped_student_against_a_cached_teacher():
    h, w, th, tw, labels = _problem(ignore=False)
    topk = _topk(th @ tw.t(), k=5)
    cfg = KDConfig("forward", alpha=0.3, temperature=1.5)
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    want = kd_loss(_cap(h64 @ w64.t(), 2.0), labels, cfg, topk=topk)
    gh = torch.autograd.grad(want.loss, h64)[0]
    got = chunked_kd_loss(h, w, labels, cfg, topk=topk, chunk=7, softcap=2.0)
    torch.testing.assert_close(got.loss.double(), want.loss.double(), rtol=1e-5, atol=1e-6)
    got.loss.backward()
    torch.testing.assert_close(h.grad.double(), gh, rtol=1e-4, atol=1e-6)


def test_a_device_normalizer_gives_the_float_normalizer_bit_for_bit():
    h, w, th, tw, labels = _problem()
    cfg = KDConfig("forward", alpha=0.5)
    a = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, normalizer=31.0, chunk=5)
    ga = torch.autograd.grad(a.loss, [h, w])
    b = chunked_kd_loss(h, w, labels, cfg, teacher_hidden=th, teacher_head=tw, normalizer=torch.tensor(31.0), chunk=5)
    gb = torch.autograd.grad(b.loss, [h, w])
    assert torch.equal(a.loss, b.loss) and all(torch.equal(x, y) for x, y in zip(ga, gb))
