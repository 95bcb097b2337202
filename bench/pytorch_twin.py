#!/usr/bin/env python3
"""blocklab's classifier training step in plain PyTorch, for `blocklab bench twin` only.

The same ViT (src/models/vit.cpp, layers.cpp), the same end-to-end and block losses
(src/families/classifier/classifier.cpp), noise levels (src/schedule/noise.cpp), AdamW
(src/train/adamw.cpp), gradient clipping and step (src/train/step.cpp), written as a PyTorch user
would, with libtorch's own ops (attention as matmul, softmax, matmul). It runs on the libtorch that
blocklab links (Debian's python3-torch 1.13), so equal weights, batch and seed give the same loss:
`bench twin` checks that before timing, so the ratio it prints is one of equal work.

Run by `blocklab bench twin`, which writes the fixture directory and talks over stdin/stdout, one
line per command (all replies are one line; failures are "error <message>"):

    load <dir>                 weights <dir>/weights.safetensors, batch <dir>/batch.safetensors;
                               fresh optimizer state                   -> ok
    run <block>:<seed> ...     one training step each (block -1: end-to-end), timed together
                               -> done <seconds> <loss> <grad_norm> ...
    diff <file>                these weights against blocklab's after the same steps
                               -> diff <fraction of the moved weights off by > 1e-4 of their update>
    quit

Fixture directory: config.toml (the resolved config), fixture.json (data shape, AdamW constants,
blocklab's noise ranges and decayed parameters), and per mode (e2e/, blocks/) the weights, the
batch, blocklab's weights after its check steps (after.safetensors) and their losses, gradient
norms and seeds (check.json). `bench twin --keep` keeps it, and so does a failed check; then
`python3 bench/pytorch_twin.py DIR --replay` replays the check steps by hand and prints both sides.
Nothing here needs more than python3-torch and the standard library.
"""
import argparse
import json
import math
import os
import struct
import sys
import time
import tomllib

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:  # blocklab relays this line; a traceback would say less
    print(f"error no torch module for {sys.executable}: apt-get install python3-torch (for Debian's /usr/bin/python3)",
          flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# safetensors: u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
# then the raw little-endian bytes (src/io/safetensors.h).

def read_safetensors(path):
    dtypes = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    body = memoryview(data)[8 + size:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = dtypes[info["dtype"]]
        if end == begin:
            tensors[name] = torch.empty(info["shape"], dtype=dtype)
        else:  # frombuffer shares the buffer: a bytearray copy makes each tensor own writable memory
            tensors[name] = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(info["shape"])
    return tensors


# ---------------------------------------------------------------------------------------------
# Noise levels (src/schedule/noise.cpp), in double precision, operation for operation.

def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_quantile(p):
    # Acklam's rational approximation, then one Halley step on normal_cdf.
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    p_low = 0.02425
    if p < p_low:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p <= 1 - p_low:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    else:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    e = normal_cdf(x) - p
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


class LogNormalSigma:
    """EDM's log sigma ~ N(p_mean, p_std^2) on [sigma_min, sigma_max]; warped coordinate log sigma."""

    def __init__(self, noise):
        self.lo, self.hi = noise["sigma_min"], noise["sigma_max"]
        self.p_mean, self.p_std = noise["p_mean"], noise["p_std"]

    def cdf(self, sigma):
        return normal_cdf((math.log(sigma) - self.p_mean) / self.p_std)

    def quantile(self, q):
        return math.exp(self.p_mean + self.p_std * normal_quantile(q))

    warp, unwarp = staticmethod(math.log), staticmethod(math.exp)


class Partition:
    """The noise range cut into B equal-probability intervals; block 0 owns the highest levels."""

    def __init__(self, dist, blocks, overlap):
        self.dist, self.blocks, self.overlap = dist, blocks, overlap
        q_lo, q_hi = dist.cdf(dist.lo), dist.cdf(dist.hi)
        self.bounds = [dist.quantile(q_lo + (q_hi - q_lo) * b / blocks) for b in range(blocks + 1)]
        self.bounds[0], self.bounds[-1] = dist.lo, dist.hi

    def nominal(self, block):
        return self.bounds[self.blocks - 1 - block], self.bounds[self.blocks - block]

    def range(self, block):
        lo, hi = self.nominal(block)
        if self.overlap == 0:
            return lo, hi
        lo, hi = self.dist.warp(lo), self.dist.warp(hi)
        r = hi - lo
        return (max(self.dist.unwarp(lo - self.overlap * r), self.dist.lo),
                min(self.dist.unwarp(hi + self.overlap * r), self.dist.hi))

    def sample(self, block, uniform_in_warp, rng):
        lo, hi = self.range(block)
        if uniform_in_warp:
            return self.dist.unwarp(rng.uniform(self.dist.warp(lo), self.dist.warp(hi)))
        return min(max(self.dist.quantile(rng.uniform(self.dist.cdf(lo), self.dist.cdf(hi))), lo), hi)


class MT19937_64:
    """std::mt19937_64 with libstdc++'s uniform_real_distribution<double>: blocklab draws a step's
    noise levels with these (classifier.cpp sample_sigmas), not with torch's generator."""
    N, M, MASK = 312, 156, (1 << 64) - 1
    UPPER, LOWER, MATRIX_A = 0xFFFFFFFF80000000, 0x7FFFFFFF, 0xB5026F5AA96619E9

    def __init__(self, seed):
        mt = [seed & self.MASK]
        for i in range(1, self.N):
            mt.append((6364136223846793005 * (mt[-1] ^ (mt[-1] >> 62)) + i) & self.MASK)
        self.mt, self.i = mt, 0

    def __call__(self):
        # The twist one word at a time, when it is first read: the same words as libstdc++'s
        # whole-state twist, without computing the ones a step never reads.
        mt, i, n = self.mt, self.i, self.N
        y = (mt[i] & self.UPPER) | (mt[(i + 1) % n] & self.LOWER)
        mt[i] = mt[(i + self.M) % n] ^ (y >> 1) ^ (self.MATRIX_A if y & 1 else 0)
        x = mt[i]
        self.i = (i + 1) % n
        x ^= (x >> 29) & 0x5555555555555555
        x ^= (x << 17) & 0x71D67FFFEDA60000
        x ^= (x << 37) & 0xFFF7EEE000000000
        return x ^ (x >> 43)

    def uniform(self, a, b):
        u = float(self()) / 18446744073709551616.0  # generate_canonical<double, 53>: one 64-bit draw
        if u >= 1.0:
            u = math.nextafter(1.0, 0.0)
        return u * (b - a) + a


# ---------------------------------------------------------------------------------------------
# The model (src/models/vit.cpp, layers.cpp). Module and parameter names are blocklab's, so its
# safetensors load with strict names; registration order is blocklab's, so is the parameter order.

def sinusoidal_embedding(t, dim, max_period=10000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype) / float(half))
    args = t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.cos(args), torch.sin(args)], 1)


def scalar_over(x, tensor):
    """x / tensor as libtorch's C++ operator computes it (fill, then divide); Python's
    x / tensor is reciprocal(tensor) * x, which may round differently."""
    return torch.empty_like(tensor).fill_(x).div_(tensor)


class NoiseEmbedder(nn.Module):
    FREQUENCY_DIM = 256

    def __init__(self, cond_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.FREQUENCY_DIM, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, c_noise):
        return F.silu(self.mlp(sinusoidal_embedding(c_noise, self.FREQUENCY_DIM)))


class AdaLN(nn.Module):
    """SiLU(Linear(cond)) split into `chunks` modulation vectors, each [N, 1, d]."""

    def __init__(self, cond_dim, hidden, chunks):
        super().__init__()
        self.proj = nn.Linear(cond_dim, chunks * hidden)
        self.chunks = chunks

    def forward(self, cond):
        m = F.silu(self.proj(cond))
        return (m.unsqueeze(1) if m.dim() == 2 else m).chunk(self.chunks, dim=2)


class TransformerLayer(nn.Module):
    """h = x + g1 Attn(LN(x)(1+s1)+b1); out = h + g2 MLP(LN(h)(1+s2)+b2)."""

    def __init__(self, o):
        super().__init__()
        self.hidden, self.heads = o["hidden"], o["heads"]
        self.ada = AdaLN(o["cond_dim"], o["hidden"], 6)
        self.qkv = nn.Linear(o["hidden"], 3 * o["hidden"])
        self.proj = nn.Linear(o["hidden"], o["hidden"])
        self.fc1 = nn.Linear(o["hidden"], o["mlp_ratio"] * o["hidden"])
        self.fc2 = nn.Linear(o["mlp_ratio"] * o["hidden"], o["hidden"])

    def attention(self, x):
        n, t = x.shape[0], x.shape[1]
        h, hd = self.heads, self.hidden // self.heads
        qkv = self.qkv(x).view(n, t, 3, h, hd).permute(2, 0, 3, 1, 4)  # (3, N, h, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(hd)
        att = torch.softmax(scores, -1)
        return self.proj(torch.matmul(att, v).transpose(1, 2).reshape(n, t, self.hidden))

    def forward(self, x, cond):
        m = self.ada(cond)  # shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
        ln = lambda v: F.layer_norm(v, (self.hidden,), eps=1e-6)  # noqa: E731
        h = x + m[2] * self.attention(ln(x) * (1 + m[1]) + m[0])
        mlp_in = ln(h) * (1 + m[4]) + m[3]
        return h + m[5] * self.fc2(F.gelu(self.fc1(mlp_in)))


class Block(nn.Module):
    def __init__(self, o, num_layers):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(o) for _ in range(num_layers))

    def forward(self, x, cond):
        for layer in self.layers:
            x = layer(x, cond)
        return x


class SharedIO(nn.Module):
    def __init__(self, o):
        super().__init__()
        d = o["hidden"]
        self.patch_embed = nn.Conv2d(o["channels"], d, o["patch"], stride=o["patch"])
        self.pos_embed = nn.Parameter(torch.zeros(1, o["lead_tokens"] + o["num_patches"], d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.label_embed = nn.Embedding(o["classes"], d)
        self.noise_embed = NoiseEmbedder(o["cond_dim"])
        self.final_norm = nn.LayerNorm(d, eps=1e-6)
        self.out_ada = AdaLN(o["cond_dim"], d, 2)
        self.head = nn.Linear(d, o["classes"])


class ViT(nn.Module):
    def __init__(self, o):
        super().__init__()
        self.o = o
        self.shared = SharedIO(o)
        per_block = o["layers"] // o["blocks"]
        self.blocks = nn.ModuleDict({str(b): Block(o, per_block) for b in range(o["blocks"])})

    def condition(self, c_noise):
        return self.shared.noise_embed(c_noise)

    def features(self, images, lead, cond, first, last):
        io, o = self.shared, self.o
        patches = io.patch_embed(images).flatten(2).transpose(1, 2)  # (N, P, d)
        tokens = [t.unsqueeze(1) for t in lead] + [patches]
        pos = io.pos_embed  # lead tokens take the first positions, patches always the last P
        if len(lead) < o["lead_tokens"]:
            pos = torch.cat([pos.narrow(1, 0, len(lead)), pos.narrow(1, o["lead_tokens"], o["num_patches"])], 1)
        x = torch.cat(tokens, 1) + pos
        for b in range(first, last):
            x = self.blocks[str(b)](x, cond)
        return io.final_norm(x.select(1, 0))

    def label_lead(self, scaled_label):
        if not self.o["label_beside_cls"]:
            return [scaled_label]
        return [self.shared.cls_token.squeeze(1).expand(scaled_label.shape[0], self.o["hidden"]), scaled_label]

    def classify(self, d, cond):
        m = self.shared.out_ada(cond)  # shift, scale
        return self.shared.head(d * (1 + m[1].squeeze(1)) + m[0].squeeze(1))

    def forward(self, images):
        n = images.shape[0]
        cond = self.condition(torch.zeros(n, dtype=images.dtype))
        lead = self.shared.cls_token.squeeze(1).expand(n, self.o["hidden"])
        return self.classify(self.features(images, [lead], cond, 0, self.o["blocks"]), cond)


# ---------------------------------------------------------------------------------------------
# The family (src/families/classifier/classifier.cpp, family.cpp) and the step (src/train).

def precondition(sigma, sigma_data):
    """EDM's c_skip, c_out, c_in, c_noise and lambda(sigma) (src/schedule/precond.h)."""
    s2 = sigma * sigma
    d2 = sigma_data * sigma_data
    return {"c_skip": scalar_over(d2, s2 + d2), "c_out": sigma * sigma_data / torch.sqrt(s2 + d2),
            "c_in": scalar_over(1.0, torch.sqrt(s2 + d2)), "c_noise": 0.25 * torch.log(sigma),
            "weight": (s2 + d2) / (s2 * d2)}


def weighted_loss(per_example, weight, how):
    if how == "per_sample":
        return (weight * per_example).mean()
    if how == "batch_mean":
        return weight.mean() * per_example.mean()
    if how == "normalized":
        return (weight * per_example).sum() / weight.sum().detach()
    if how == "none":
        return per_example.mean()
    raise ValueError(f"unknown diffusion.weighting {how!r}")


class Classifier:
    def __init__(self, cfg, model, partition):
        self.cfg, self.vit, self.partition = cfg, model, partition
        self.sigma_data = cfg["diffusion"]["sigma_data"]

    def cross_entropy(self, logits, labels):
        return F.cross_entropy(logits, labels, reduction="none",
                               label_smoothing=self.cfg["classifier"]["label_smoothing"])

    def target(self, labels):
        return F.normalize(self.vit.shared.label_embed(labels), dim=-1)

    def denoise_logits(self, images, z, sigma, block):
        pc = precondition(sigma, self.sigma_data)
        cond = self.vit.condition(pc["c_noise"])
        h = self.vit.features(images, self.vit.label_lead(pc["c_in"].unsqueeze(1) * z), cond, block, block + 1)
        d = pc["c_out"].unsqueeze(1) * h + pc["c_skip"].unsqueeze(1) * z
        return self.vit.classify(d, cond)

    def sample_sigmas(self, block, n, seed):
        rng = MT19937_64(seed)
        uniform = self.cfg["diffusion"]["sigma_sampling"] == "log_uniform"
        sigmas = [self.partition.sample(block, uniform, rng) for _ in range(n)]
        return torch.tensor(sigmas, dtype=torch.float64).to(torch.float32)

    def loss(self, x, y, block, seed):
        """(what backward runs on, the unweighted loss); torch is seeded with `seed` by the caller."""
        if block < 0:
            ce = self.cross_entropy(self.vit(x), y).mean()
            return ce, ce.detach()
        sigma = self.sample_sigmas(block, y.shape[0], seed)
        t = self.target(y)
        z = t + sigma.unsqueeze(1) * torch.randn_like(t)
        ce = self.cross_entropy(self.denoise_logits(x, z, sigma, block), y)
        w = precondition(sigma, self.sigma_data)["weight"]
        return weighted_loss(ce, w, self.cfg["diffusion"]["weighting"]), ce.mean().detach()


class AdamW:
    """src/train/adamw.cpp: a parameter without a gradient is skipped (no decay, no moments, no
    step count), so bias correction counts each block's own updates."""

    def __init__(self, named, decayed, beta1, beta2, eps, weight_decay):
        self.params = list(named)
        self.decayed = decayed
        self.beta1, self.beta2, self.eps, self.wd = beta1, beta2, eps, weight_decay
        self.state = {}

    def clip_grad_norm(self, max_norm):
        norms = [p.grad.norm().to(torch.float64) for _, p in self.params if p.grad is not None]
        if not norms:
            return 0.0
        total = torch.stack(norms).norm().item()
        if max_norm > 0:  # every step scales, by exactly 1 under the limit, as blocklab does
            scale = max_norm / (total + 1e-6) if total > max_norm else 1.0
            for _, p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        return total

    @torch.no_grad()
    def step(self, lr):
        for name, p in self.params:
            g = p.grad
            if g is None:
                continue
            s = self.state.get(name)
            if s is None:
                s = self.state[name] = [torch.zeros_like(p), torch.zeros_like(p), 0]
            exp_avg, exp_avg_sq = s[0], s[1]
            s[2] += 1
            if name in self.decayed:
                p.mul_(1.0 - lr * self.wd)
            exp_avg.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            bc1 = 1.0 - math.pow(self.beta1, float(s[2]))
            bc2 = 1.0 - math.pow(self.beta2, float(s[2]))
            denom = (exp_avg_sq / bc2).sqrt_().add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-lr / bc1)

    def zero_grad(self):
        for _, p in self.params:
            p.grad = None


class Twin:
    def __init__(self, fixture_dir):
        with open(f"{fixture_dir}/config.toml", "rb") as f:
            self.cfg = tomllib.load(f)
        with open(f"{fixture_dir}/fixture.json") as f:
            self.fixture = json.load(f)
        cfg, shape = self.cfg, self.fixture["data"]
        m = cfg["model"]
        if cfg["model"]["family"] != "classifier" or cfg["train"].get("shared", "synced") != "synced":
            raise ValueError("the twin mirrors the classifier family with shared modules synced only")
        beside = cfg["classifier"]["label_token"] == "beside_cls"
        self.options = {"hidden": m["hidden"], "heads": m["heads"], "layers": m["layers"], "blocks": m["blocks"],
                        "mlp_ratio": m["mlp_ratio"], "cond_dim": m["cond_dim"], "patch": cfg["classifier"]["patch"],
                        "channels": shape["channels"], "classes": shape["classes"], "label_beside_cls": beside,
                        "lead_tokens": 2 if beside else 1,
                        "num_patches": (shape["height"] // cfg["classifier"]["patch"]) *
                                       (shape["width"] // cfg["classifier"]["patch"])}
        self.vit = ViT(self.options)
        d = cfg["diffusion"]
        noise = {k: d[k] for k in ("p_mean", "p_std", "sigma_min", "sigma_max")}
        self.partition = Partition(LogNormalSigma(noise), m["blocks"], d["overlap"])
        self.check_ranges(self.fixture["ranges"])
        self.family = Classifier(cfg, self.vit, self.partition)
        self.decayed = self.decayed_names()
        if sorted(self.decayed) != sorted(self.fixture["decayed"]):
            raise ValueError("weight decay would reach other parameters than blocklab's")
        self.x = self.y = self.opt = self.loaded = None

    def check_ranges(self, theirs):
        ours = [self.partition.range(b) for b in range(self.partition.blocks)]
        worst = max(abs(a - b) / b for r, s in zip(ours, theirs) for a, b in zip(r, s))
        if len(ours) != len(theirs) or worst > 1e-12:
            raise ValueError(f"noise ranges differ from blocklab's (relative {worst:.3g}): {ours} vs {theirs}")

    def decayed_names(self):
        names = [n for n, _ in self.vit.named_parameters()]
        if self.cfg["train"]["decay"] == "all":
            return set(names)
        # Matrices only (as nanoGPT): the weights of Linear and Conv layers (src/train/step.cpp).
        return {f"{n}.weight" for n, mod in self.vit.named_modules() if isinstance(mod, (nn.Linear, nn.Conv2d))}

    def load(self, directory):
        weights = read_safetensors(f"{directory}/weights.safetensors")
        self.vit.load_state_dict(weights, strict=True)  # names and shapes must be blocklab's
        batch = read_safetensors(f"{directory}/batch.safetensors")
        self.x, self.y = batch["x"], batch["y"]
        a = self.fixture["adamw"]
        self.opt = AdamW(self.vit.named_parameters(), self.decayed, a["beta1"], a["beta2"], a["eps"],
                         self.cfg["train"]["weight_decay"])
        self.loaded = {n: p.detach().clone() for n, p in self.vit.named_parameters()}

    def step(self, block, seed):
        """One optimizer step as StepRunner::run does it: seed, loss, check, backward, clip, AdamW."""
        torch.manual_seed(seed)
        loss, plain = self.family.loss(self.x, self.y, block, seed)
        value = loss.item()
        if not math.isfinite(value):
            self.opt.zero_grad()
            raise ValueError(f"loss is {value}")
        loss.backward()
        plain.item()
        grad_norm = self.opt.clip_grad_norm(self.cfg["train"]["grad_clip"])
        if not math.isfinite(grad_norm):
            self.opt.zero_grad()
            raise ValueError(f"gradient norm is {grad_norm}")
        # The rig trains at the configured peak rate from its first step (src/train/synthetic.cpp).
        self.opt.step(self.cfg["train"]["lr"])
        self.opt.zero_grad()
        return value, grad_norm

    def diff(self, path):
        """The fraction of the weights that moved whose position differs from blocklab's `path` by
        more than 1e-4 of their update. AdamW's first steps are about lr * sign(gradient), so a
        weight whose true gradient is zero (the attention keys' biases) moves as the rounding of
        its gradient says, on either side: a few per thousand. A different optimizer step moves
        most weights elsewhere (without weight decay, 95% of them)."""
        theirs = read_safetensors(path)
        off = moved = 0
        for name, p in self.vit.named_parameters():
            w = theirs[name]
            update, apart = (w - self.loaded[name]).abs(), (p.detach() - w).abs()
            counted = (update > 0) | (apart > 0)
            moved += int(counted.sum())
            off += int((apart > 1e-4 * update)[counted].sum())
        return off / max(moved, 1)


def serve(twin, lines, out):
    for line in lines:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "quit":
                return
            if words[0] == "load" and len(words) == 2:
                twin.load(words[1])
                reply = "ok"
            elif words[0] == "run" and len(words) > 1:
                steps = [tuple(int(v) for v in w.split(":")) for w in words[1:]]
                results = []
                start = time.perf_counter()
                for block, seed in steps:
                    results.append(twin.step(block, seed))
                elapsed = time.perf_counter() - start
                reply = f"done {elapsed!r} " + " ".join(f"{loss!r} {norm!r}" for loss, norm in results)
            elif words[0] == "diff" and len(words) == 2:
                reply = f"diff {twin.diff(words[1])!r}"
            else:
                reply = f"error unknown command {line.strip()!r}"
        except Exception as e:  # one line back to blocklab, which says it and exits
            reply = "error " + " ".join(f"{type(e).__name__}: {e}".split())
        print(reply, file=out, flush=True)


def replay(twin, fixture):
    """Replays blocklab's check steps of each mode in the fixture and prints both sides."""
    for mode in ("e2e", "blocks"):
        directory = f"{fixture}/{mode}"
        if not os.path.exists(f"{directory}/check.json"):
            continue
        twin.load(directory)
        with open(f"{directory}/check.json") as f:
            steps = json.load(f)["steps"]
        for s in steps:
            loss, norm = twin.step(s["block"], s["seed"])
            print(f"{mode} step {s['step']} (block {s['block']}): loss blocklab {s['loss']!r} twin {loss!r}, "
                  f"gradient norm blocklab {s['grad_norm']!r} twin {norm!r}")
        off = twin.diff(f"{directory}/after.safetensors")
        print(f"{mode}: {100 * off:.2f}% of the moved weights differ from blocklab's by more than 1e-4 of their update")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", help="the fixture directory `blocklab bench twin` wrote")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (blocklab's train.threads)")
    parser.add_argument("--replay", action="store_true",
                        help="replay blocklab's check steps of the fixture and print both sides, then exit")
    args = parser.parse_args()
    out = sys.stdout
    torch.set_num_threads(args.threads)
    try:
        twin = Twin(args.fixture)
    except Exception as e:
        print("error " + " ".join(f"{type(e).__name__}: {e}".split()), file=out, flush=True)
        return 1
    if args.replay:
        replay(twin, args.fixture)
        return 0
    print(f"ready torch {torch.__version__} threads {torch.get_num_threads()}", file=out, flush=True)
    serve(twin, sys.stdin, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
