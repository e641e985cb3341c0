"""A tiny Transformer learns to copy a sequence of digits: token and learned position
embeddings, nn.Transformer (batch first, encoder and decoder), teacher forcing with a causal
target mask and a padding mask, label smoothing, Adam with a warm-up schedule; then greedy
decoding in eval mode and the share of digits copied right."""

import math

import torch
import torch.nn as nn

VOCAB, BOS, PAD = 12, 10, 11  # digits 0-9, begin-of-sequence, padding
LENGTH, D_MODEL = 6, 32


class Copier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D_MODEL, padding_idx=PAD)
        self.positions = nn.Parameter(torch.randn(1, LENGTH + 1, D_MODEL) * 0.02)
        self.transformer = nn.Transformer(D_MODEL, nhead=4, num_encoder_layers=2,
                                          num_decoder_layers=2, dim_feedforward=64,
                                          dropout=0.1, batch_first=True)
        self.out = nn.Linear(D_MODEL, VOCAB)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x) * math.sqrt(D_MODEL) + self.positions[:, :x.size(1)]

    def forward(self, src, tgt, src_padding):
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        h = self.transformer(self.embed(src), self.embed(tgt), tgt_mask=tgt_mask,
                             src_key_padding_mask=src_padding,
                             memory_key_padding_mask=src_padding)
        return self.out(h)


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randint(0, 10, (n, LENGTH))
    lengths = torch.randint(3, LENGTH + 1, (n,))
    src[torch.arange(LENGTH) >= lengths[:, None]] = PAD  # shorter sequences, padded
    return src, src == PAD


torch.manual_seed(0)
model = Copier()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
loss_fn = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)

for step in range(40):
    src, padding = batch(32)
    tgt_in = torch.cat([torch.full((32, 1), BOS), src[:, :-1]], dim=1)  # teacher forcing
    logits = model(src, tgt_in, padding)
    loss = loss_fn(logits.reshape(-1, VOCAB), src.reshape(-1))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    if step % 4 == 0:
        print(step, f"{loss.item():.9f}")

model.eval()
with torch.no_grad():
    src, padding = batch(16)
    memory = model.transformer.encoder(model.embed(src), src_key_padding_mask=padding)
    out = torch.full((16, 1), BOS)
    for _ in range(LENGTH):
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(out.size(1))
        h = model.transformer.decoder(model.embed(out), memory, tgt_mask=tgt_mask,
                                      memory_key_padding_mask=padding)
        nxt = model.out(h[:, -1]).argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
    keep = ~padding
    right = (out[:, 1:] == src) & keep
    print("copied", int(right.sum()), "of", int(keep.sum()), f"{right.sum() / keep.sum():.6f}")
    print("last logits", [f"{v:.6f}" for v in model.out(h[0, -1]).tolist()[:4]])
