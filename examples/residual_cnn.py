"""A small residual CNN with BatchNorm (conv-BN-ReLU blocks with identity shortcuts, global
average pooling) on synthetic images: train mode, then eval mode with the running statistics."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class ResidualCNN(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(BasicBlock(16), BasicBlock(16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def make_data(n, generator):
    """Images whose class is the quadrant holding a bright blob, plus noise."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = torch.randn(n, 3, 12, 12, generator=generator) * 0.5
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        images[i, :, 6 * r + 1:6 * r + 5, 6 * c + 1:6 * c + 5] += 2.0
    return images, labels


torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
x_train, y_train = make_data(256, g)
x_test, y_test = make_data(64, g)
model = ResidualCNN()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
criterion = nn.CrossEntropyLoss()
for epoch in range(4):
    model.train()
    perm = torch.randperm(len(x_train))
    total = 0.0
    for i in range(0, len(x_train), 32):
        idx = perm[i:i + 32]
        optimizer.zero_grad()
        loss = criterion(model(x_train[idx]), y_train[idx])
        loss.backward()
        optimizer.step()
        total += loss.item()
    model.eval()
    with torch.no_grad():
        logits = model(x_test)
        accuracy = (logits.argmax(1) == y_test).float().mean().item()
        test_loss = criterion(logits, y_test).item()
    print(f"epoch {epoch} train loss {total / 8:.6f} test loss {test_loss:.6f} "
          f"accuracy {accuracy:.4f}")
bn = model.stem[1]
print("running mean", [f"{v:.6f}" for v in bn.running_mean[:4].tolist()],
      "batches tracked", bn.num_batches_tracked.item())
