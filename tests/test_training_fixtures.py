"""Tiny models and data shared by the training tests (no tests here)."""

from __future__ import annotations

from types import SimpleNamespace

import pytorch_lightning as pl
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler, TensorDataset


class EpochShuffle(Sampler):
    """A permutation that depends on (seed, epoch) only; Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 10_000 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


class TinyNet(nn.Module):
    """Two convolutions, logits out; ``nan_at`` makes the n-th training forward return NaN."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, width: int = 4, nan_at: int = -1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Dropout2d(0.2), nn.Conv2d(width, num_classes, 1),
        )
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, x):
        out = self.body(x)
        if self.training:
            self.calls += 1
            if self.calls == self.nan_at:
                out = out * float("nan")
        return out


class BlobData(pl.LightningDataModule):
    """Random images whose mask is a thresholded blur of channel 0; shuffling is a function of (seed, epoch)."""

    def __init__(self, n_train: int = 8, n_val: int = 4, size: int = 32, batch_size: int = 2, num_classes: int = 1):
        super().__init__()
        self.batch_size = batch_size
        self.info = SimpleNamespace(in_channels=3, num_classes=num_classes, image_size=(size, size))
        gen = torch.Generator().manual_seed(123)
        images = torch.rand(n_train + n_val, 3, size, size, generator=gen)
        smooth = nn.functional.avg_pool2d(images[:, :1], 5, stride=1, padding=2)
        if num_classes == 1:
            masks = (smooth > 0.5).float()
        else:
            masks = torch.bucketize(smooth[:, 0], torch.tensor([0.45, 0.55]))
        self.train_set = TensorDataset(images[:n_train], masks[:n_train])
        self.val_set = TensorDataset(images[n_train:], masks[n_train:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=EpochShuffle(len(self.train_set)),
                          drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class StopAt(pl.Callback):
    """Simulate a crash: raise at (0-based) ``epoch``, training batch ``step``."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.step:
            raise RuntimeError("simulated kill")
