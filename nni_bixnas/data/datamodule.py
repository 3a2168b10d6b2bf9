"""``SegDataModule``: the Lightning data module built from a spec string."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import nni
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from nni_bixnas._checks import non_negative_int
from nni_bixnas.settings import TrainingSettings, check_setting

from .augment import EpochSampler
from .build import DatasetInfo, build_datasets


@nni.trace
class SegDataModule(pl.LightningDataModule):
    """Train/validation loaders for a data spec, reproducible per ``(seed, epoch)``.

    Parameters
    ----------
    data : str
        A data spec: ``default``, ``monuseg:PATH``, ``tnbc:PATH``, ``chaos:PATH``, ``isbi2012:PATH``,
        ``folder:PATH`` (see :func:`nni_bixnas.data.parse_data_spec`).
    batch_size : int
        Training and validation batch size.
    val_fraction, seed, split_seed, patch_size, resize, augment, fold, n_folds
        Passed to :func:`nni_bixnas.data.build_datasets`: ``seed`` seeds shuffling, augmentation and
        crops, ``split_seed`` the train/validation split; ``patch_size`` is the random training crop
        (validation uses full patches), ``resize`` resizes every patch.
    num_workers : int
        DataLoader worker processes.

    Notes
    -----
    The training loader uses an :class:`~nni_bixnas.data.augment.EpochSampler`: Lightning calls its
    ``set_epoch`` at every epoch, and each item's augmentation is seeded from ``(seed, epoch, index)``,
    so epoch ``e`` is the same whether or not the run was interrupted and resumed before it.
    ``train_dataloader`` also reads ``trainer.current_epoch`` when a trainer is attached.
    Built only from plain arguments, and traced by NNI, so it can be serialised into a trial.
    """

    def __init__(
        self,
        data: str = "default",
        batch_size: int = 2,
        val_fraction: float = 0.2,
        seed: int = 0,
        split_seed: int = 0,
        patch_size: Optional[Union[int, Tuple[int, int]]] = None,
        resize: Optional[Union[int, Tuple[int, int]]] = None,
        augment: bool = True,
        num_workers: int = 0,
        fold: int = 0,
        n_folds: int = 5,
    ):
        super().__init__()
        self.data, self.batch_size = data, check_setting("batch_size", batch_size)
        self.num_workers = non_negative_int("num_workers", num_workers)
        check_setting("seed", seed)
        self.seed, self.split_seed, self.val_fraction = seed, split_seed, val_fraction
        self.patch_size, self.resize, self.augment = patch_size, resize, augment
        self.fold, self.n_folds = fold, n_folds
        self._datasets = None

    @classmethod
    def from_settings(cls, settings: TrainingSettings, **options) -> "SegDataModule":
        """The data module of a :class:`~nni_bixnas.settings.TrainingSettings` (its data, batch size, seeds, crop,
        resize and validation share); ``options`` are the other arguments (``augment``, ``fold``, ...)."""
        return cls(data=settings.data, **settings.data_options(), **options)

    def _build(self):
        if self._datasets is None:
            self._datasets = build_datasets(
                self.data,
                val_fraction=self.val_fraction,
                seed=self.seed,
                split_seed=self.split_seed,
                patch_size=self.patch_size,
                resize=self.resize,
                augment=self.augment,
                fold=self.fold,
                n_folds=self.n_folds,
            )
        return self._datasets

    @property
    def info(self) -> DatasetInfo:
        """The :class:`DatasetInfo` (builds the datasets on first access)."""
        return self._build()[2]

    def setup(self, stage: Optional[str] = None) -> None:
        self._build()

    def train_dataloader(self, epoch: Optional[int] = None) -> DataLoader:
        """Shuffled, augmented batches of epoch ``epoch`` (default: the trainer's current epoch, or 0)."""
        train, _, _ = self._build()
        if epoch is None:
            trainer = getattr(self, "trainer", None)
            epoch = trainer.current_epoch if trainer is not None else 0
        sampler = EpochSampler(len(train), seed=self.seed, shuffle=True)
        sampler.set_epoch(epoch)
        train.set_epoch(epoch)
        return DataLoader(train, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        _, val, _ = self._build()
        return DataLoader(val, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
