"""An Embedding + GRU encoder-decoder learns to reverse short digit sequences, with teacher
forcing: the decoder reads the true previous token during training (a scheduled share of its
own predictions in later steps), starting from the encoder's final state; then greedy decoding
under torch.no_grad()."""

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, SOS = 11, 10  # digits 0-9 and a start token
LENGTH, HIDDEN = 5, 48


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.gru = nn.GRU(16, HIDDEN, batch_first=True)

    def forward(self, src):
        _, h = self.gru(self.embed(src))
        return h


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.gru = nn.GRU(16, HIDDEN, batch_first=True)
        self.out = nn.Linear(HIDDEN, VOCAB)

    def forward(self, token, h):
        out, h = self.gru(F.relu(self.embed(token)), h)  # one step: token (batch, 1)
        return self.out(out[:, 0]), h


torch.manual_seed(0)
encoder, decoder = Encoder(), Decoder()
params = list(encoder.parameters()) + list(decoder.parameters())
opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)

for step in range(30):
    src = torch.randint(0, 10, (16, LENGTH))
    tgt = src.flip(1)
    h = encoder(src)
    token = torch.full((16, 1), SOS)
    loss = 0.0
    forcing = step < 20  # teacher forcing first, then the decoder's own guesses
    for t in range(LENGTH):
        logits, h = decoder(token, h)
        loss = loss + F.cross_entropy(logits, tgt[:, t])
        token = tgt[:, t:t + 1] if forcing else logits.argmax(1, keepdim=True).detach()
    loss = loss / LENGTH
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
    print(step, f"{loss.item():.9f}")

with torch.no_grad():
    src = torch.randint(0, 10, (8, LENGTH))
    h = encoder(src)
    token = torch.full((8, 1), SOS)
    guesses = []
    for _ in range(LENGTH):
        logits, h = decoder(token, h)
        token = logits.argmax(1, keepdim=True)
        guesses.append(token)
    out = torch.cat(guesses, 1)
    print("right", int((out == src.flip(1)).sum()), "of", out.numel())
    print("state", [f"{v:.6f}" for v in h[0, 0, :4].tolist()])
