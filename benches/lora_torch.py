"""The PyTorch + transformers + PEFT side of benches/lora.sh: the same shapes,
modes, phases and measurements as examples/lora_bench.rs. Prints one JSON object.

    python benches/lora_torch.py SHAPE MODE PHASE [SOURCE]

SHAPE: bart-large, qwen2.5-0.5b or qwen2.5-1.5b (random weights). MODE: full,
lora (PEFT LoraConfig r=16, lora_alpha=32, target_modules="all-linear") or
lora-ckpt (the same with model.gradient_checkpointing_enable()). PHASE: sft
(one warm-up and one timed step: forward, backward, AdamW) or ppo (one
update: sampled rollouts of 128 tokens, policy, reference and value
passes, one step of the clipped losses; with LoRA the reference is the
model under `disable_adapter()`, as TRL does). Batch 2, SOURCE (512) tokens
read by BART, SOURCE - 128 prompt tokens plus 128 for a causal model.
"""
import copy
import json
import resource
import sys
import time

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, get_peft_model
from transformers import BartConfig, BartForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM

SHAPE, MODE, PHASE = (sys.argv[1:4] + ["bart-large", "lora", "sft"][len(sys.argv[1:4]):])
SOURCE = int(sys.argv[4]) if len(sys.argv) > 4 else 512
BATCH, TARGET = 2, 128
torch.manual_seed(0)
if SHAPE == "bart-large":
    cfg = BartConfig(vocab_size=50265, d_model=1024, encoder_layers=12, decoder_layers=12,
                     encoder_attention_heads=16, decoder_attention_heads=16,
                     encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
                     dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                     decoder_start_token_id=2, forced_eos_token_id=None)
    model = BartForConditionalGeneration(cfg)
    causal, vocab, hidden = False, cfg.vocab_size, cfg.d_model
else:
    hidden, inter, layers, heads = {"qwen2.5-0.5b": (896, 4864, 24, 14),
                                    "qwen2.5-1.5b": (1536, 8960, 28, 12)}[SHAPE]
    cfg = Qwen2Config(vocab_size=151936, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=2,
                      tie_word_embeddings=True, max_position_embeddings=32768,
                      pad_token_id=151643, eos_token_id=151643)
    model = Qwen2ForCausalLM(cfg)
    causal, vocab = True, cfg.vocab_size
out = {"framework": f"pytorch {torch.__version__} + transformers {transformers.__version__} "
                    f"+ peft {peft.__version__}",
       "shape": SHAPE, "mode": MODE, "phase": PHASE, "source": SOURCE, "batch": BATCH,
       "threads": torch.get_num_threads(),
       "parameters": sum(p.numel() for p in model.parameters())}
if MODE != "full":
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules="all-linear"))
    out["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
if MODE == "lora-ckpt":
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
g = torch.Generator().manual_seed(1)


def rand(n):
    return torch.randint(4, vocab - 4, (BATCH, n), generator=g)


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


prompt = rand(SOURCE - TARGET if causal else SOURCE)
out["static_rss_mib"] = rss_mib()
params = [p for p in model.parameters() if p.requires_grad]


def forward(ids_prompt, response):
    """Logits predicting `response` after `ids_prompt`, and the last hidden states there."""
    if causal:
        ids = torch.cat([ids_prompt, response], 1)
        res = model(input_ids=ids, output_hidden_states=True)
        s = ids_prompt.shape[1]
        return res.logits[:, s - 1:-1], res.hidden_states[-1][:, s - 1:-1]
    dec_in = torch.cat([torch.full((BATCH, 1), 2), response[:, :-1]], 1)
    res = model(input_ids=ids_prompt, decoder_input_ids=dec_in, output_hidden_states=True)
    return res.logits, res.decoder_hidden_states[-1]


def sft():
    opt = torch.optim.AdamW(params, lr=1e-4, eps=1e-8)
    model.train()
    target = rand(TARGET)
    for step in range(2):
        t0 = time.perf_counter()
        logits, _ = forward(prompt, target)
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), target.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        out["sft_step_seconds"] = time.perf_counter() - t0


def logprobs_values(response, value_head):
    logits, h = forward(prompt, response)
    lp = torch.gather(F.log_softmax(logits.float(), -1), 2, response[..., None])[..., 0]
    return lp, (value_head(h)[..., 0] if value_head is not None else None)


def ppo():
    value_head = torch.nn.Linear(hidden, 1)
    reference = None if MODE != "full" else copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(params + list(value_head.parameters()), lr=1e-5, eps=1e-8)
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        kw = dict(do_sample=True, top_k=0, max_new_tokens=TARGET, min_new_tokens=TARGET)
        if causal:
            seq = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kw)
            response = seq[:, prompt.shape[1]:]
        else:
            seq = model.generate(input_ids=prompt, forced_bos_token_id=None,
                                 forced_eos_token_id=None, **kw)
            response = seq[:, 1:]
        old_lp, old_values = logprobs_values(response, value_head)
        if reference is None:
            with model.disable_adapter():
                ref_lp, _ = logprobs_values(response, None)
        else:
            if causal:
                ids = torch.cat([prompt, response], 1)
                s = prompt.shape[1]
                ref_logits = reference(input_ids=ids).logits[:, s - 1:-1]
            else:
                dec_in = torch.cat([torch.full((BATCH, 1), 2), response[:, :-1]], 1)
                ref_logits = reference(input_ids=prompt, decoder_input_ids=dec_in).logits
            ref_lp = torch.gather(F.log_softmax(ref_logits.float(), -1), 2,
                                  response[..., None])[..., 0]
    rewards = -0.05 * (old_lp - ref_lp)
    rewards[:, -1] += 1.0
    adv = torch.zeros_like(rewards)
    last = torch.zeros(BATCH)
    for t in reversed(range(rewards.shape[1])):
        nxt = old_values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros(BATCH)
        last = rewards[:, t] + nxt - old_values[:, t] + 0.95 * last
        adv[:, t] = last
    returns = adv + old_values
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    model.train()
    lp, values = logprobs_values(response, value_head)
    ratio = torch.exp(lp - old_lp)
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
    vclip = old_values + (values - old_values).clamp(-0.2, 0.2)
    vf = 0.5 * torch.max((values - returns) ** 2, (vclip - returns) ** 2).mean()
    (pg + 0.1 * vf).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()
    out.update(ppo_update_seconds=time.perf_counter() - t0,
               ppo_response_length=float(response.shape[1]))


{"sft": sft, "ppo": ppo}[PHASE]()
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
