"""The embedded default dataset, the train/val split, augmentation and the data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_bixnas.data import SegDataModule, build_datasets, build_eval_dataset, parse_data_spec
from nni_bixnas.data.augment import AugmentedDataset
from nni_bixnas.data.synthetic import generate_tile


def test_generator_is_deterministic_and_plausible():
    image, mask = generate_tile(0, 3, 64)
    again, mask_again = generate_tile(0, 3, 64)
    other, _ = generate_tile(1, 3, 64)
    assert image.shape == (3, 64, 64) and image.dtype == np.uint8 and mask.shape == (64, 64)
    assert np.array_equal(image, again) and np.array_equal(mask, mask_again)
    assert not np.array_equal(image, other)
    fractions = [generate_tile(0, i, 64)[1].mean() for i in range(16)]
    assert 0.05 < np.mean(fractions) < 0.4
    # nuclei are darker than background on average, but not separable by one threshold
    grey = image.mean(0)
    assert grey[mask == 1].mean() < grey[mask == 0].mean() - 40
    darkest_background = np.percentile(grey[mask == 0], 1)
    brightest_nucleus = np.percentile(grey[mask == 1], 99)
    assert brightest_nucleus > darkest_background


def test_default_spec_options_and_split():
    train, val, info = build_datasets("default:n=10,size=32,seed=3", val_fraction=0.2, seed=1)
    assert (info.n_train, info.n_val, info.n_source_items, info.image_size) == (8, 2, 10, (32, 32))
    assert len(train) == 8 and len(val) == 2
    assert not set(info.train_sources) & set(info.val_sources)
    image, mask = val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert mask.shape == (1, 32, 32) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert build_datasets("default:n=10,size=32,seed=3", seed=2)[2].val_sources == info.val_sources
    assert build_datasets("default:n=10,size=32,seed=3", split_seed=2)[2].val_sources != info.val_sources


def test_resize_and_eval_dataset():
    dataset, info = build_eval_dataset("default:n=3,size=64", resize=32)
    assert len(dataset) == 3 and info.image_size == (32, 32) and info.n_val == 3
    image, mask = dataset[0]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "spec, match",
    [["default:n", "key=integer"], ["default:bogus=3", "unknown option"], ["default:n=0", "n >= 1"]],
)
def test_default_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        build_datasets(spec)


def test_parse_spec():
    assert parse_data_spec("monuseg:/a/b").path.as_posix() == "/a/b"
    folder = parse_data_spec("folder:/imgs,/masks")
    assert folder.path.as_posix() == "/imgs" and folder.mask_path.as_posix() == "/masks"
    assert parse_data_spec("default:n=4").options == {"n": 4}
    with pytest.raises(ValueError, match="valid schemes: monuseg, tnbc, chaos, isbi2012, folder, default"):
        parse_data_spec("kaggle:/x")
    with pytest.raises(ValueError, match="no path"):
        parse_data_spec("monuseg:")


def test_augmentation_is_a_function_of_seed_epoch_index():
    train, _, _ = build_datasets("default:n=6,size=32", val_fraction=0)
    first = train[(2, 4)]
    assert all(torch.equal(a, b) for a, b in zip(first, train[(2, 4)]))
    torch.manual_seed(123)  # the global RNG does not matter
    assert all(torch.equal(a, b) for a, b in zip(first, train[(2, 4)]))
    assert not torch.equal(first[0], train[(3, 4)][0])
    plain = AugmentedDataset(train.dataset, augment=False)[4]
    assert not torch.equal(first[0], plain[0])
    assert set(first[1].unique().tolist()) <= {0.0, 1.0}  # nearest interpolation for masks


def test_multiclass_mask_augmentation_keeps_labels():
    class Labels(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            mask = torch.zeros(16, 16, dtype=torch.long)
            mask[4:12, 4:12] = 3
            return torch.rand(1, 16, 16), mask

    image, mask = AugmentedDataset(Labels(), seed=5)[(0, 0)]
    assert mask.shape == (16, 16) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 3} and image.shape == (1, 16, 16)


def _batches(loader):
    return [torch.cat([x.flatten(), y.flatten()]) for x, y in loader]


def test_datamodule_epochs_are_reproducible_and_differ():
    module = SegDataModule("default:n=8,size=32", batch_size=3, seed=7)
    assert module.info.n_train == 6 and module.info.in_channels == 3
    epoch1 = _batches(module.train_dataloader(epoch=1))
    fresh = SegDataModule("default:n=8,size=32", batch_size=3, seed=7)
    fresh.train_dataloader(epoch=0)  # consuming epoch 0 first must not change epoch 1
    again = _batches(fresh.train_dataloader(epoch=1))
    assert len(epoch1) == 2 and all(torch.equal(a, b) for a, b in zip(epoch1, again))
    epoch2 = _batches(module.train_dataloader(epoch=2))
    assert not torch.equal(epoch1[0], epoch2[0])
    val = list(module.val_dataloader())
    assert sum(len(x) for x, _ in val) == 2


def test_datamodule_is_traced_and_validates():
    module = SegDataModule("default:n=4,size=32", batch_size=2)
    assert module.trace_kwargs["data"] == "default:n=4,size=32"
    with pytest.raises(ValueError, match="batch_size"):
        SegDataModule(batch_size=0)


def test_lightning_sets_sampler_epoch_so_resume_replays_batches(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Conv2d(3, 1, 1)
            self.seen = {}

        def training_step(self, batch, index):
            self.seen.setdefault(self.current_epoch, []).append(batch[0].sum().item())
            return torch.nn.functional.binary_cross_entropy_with_logits(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def trainer(epochs):
        return pl.Trainer(
            max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, default_root_dir=tmp_path, accelerator="cpu",
        )

    data = dict(data="default:n=6,size=16", batch_size=2, seed=3)
    full = Recorder()
    trainer(3).fit(full, datamodule=SegDataModule(**data))
    first = trainer(2)
    first.fit(Recorder(), datamodule=SegDataModule(**data))
    first.save_checkpoint(tmp_path / "epoch2.ckpt")
    resumed = Recorder()
    trainer(3).fit(resumed, datamodule=SegDataModule(**data), ckpt_path=tmp_path / "epoch2.ckpt")
    assert resumed.seen[2] == full.seen[2]
    assert full.seen[0] != full.seen[1]
