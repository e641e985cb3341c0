"""A character-level LSTM language model on a built-in text: embedded characters, truncated
backpropagation through time with the state carried (detached) between windows, gradient
clipping, Adam; then greedy generation from a prompt."""

import torch
import torch.nn as nn

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us."
)
chars = sorted(set(TEXT))
index = {c: i for i, c in enumerate(chars)}
data = torch.tensor([index[c] for c in TEXT])
vocab = len(chars)


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


torch.manual_seed(0)
model = CharLSTM(vocab, 32)
opt = torch.optim.Adam(model.parameters(), lr=0.01)
loss_fn = nn.CrossEntropyLoss()
seq_len, batch = 20, 8
starts = torch.randint(0, len(TEXT) - seq_len * 3 - 1, (batch,))
state = None
for step in range(30):
    offset = (step % 3) * seq_len
    idx = torch.stack([data[s + offset:s + offset + seq_len + 1] for s in starts.tolist()])
    x, y = idx[:, :-1], idx[:, 1:]
    if offset == 0:
        state = None  # a new pass over the windows: fresh state
    logits, state = model(x, state)
    state = tuple(s.detach() for s in state)  # truncated BPTT
    loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    print(step, f"{loss.item():.9f}", f"{norm.item():.9f}")

model.eval()
with torch.no_grad():
    prompt = "it was the "
    x = torch.tensor([[index[c] for c in prompt]])
    logits, state = model(x)
    text = prompt
    for _ in range(40):
        nxt = int(logits[0, -1].argmax())
        text += chars[nxt]
        logits, state = model(torch.tensor([[nxt]]), state)
print(repr(text))
