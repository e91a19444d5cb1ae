"""Files -> batches (:class:`~abswin.batch.Batch`): images ``images uint8 [B, 3, H, W]`` and
``labels int64 [B]``, normalised (and erased) on the device; videos: see :mod:`datamodules.video`.

Knows nothing about models; every number is a constructor argument, given by a data config
(``conf/data/*.yaml``, Hydra ``_target_``). The modules:

* :mod:`~datamodules.datamodule`: the base data module (batch split, loaders, probing, resume state);
* :mod:`~datamodules.loading`: samplers, per-sample seeding, DataLoader settings;
* :mod:`~datamodules.files`: folder listing, class index files, the base data set (skip and count);
* :mod:`~datamodules.collate`: data set items -> ``Batch``;
* :mod:`~datamodules.transforms`: image decoding and the train/eval transforms (uint8);
* :mod:`~datamodules.on_device`: normalisation and random erasing, on the device after transfer;
* :mod:`~datamodules.image_folder`: ImageNet-style folders;
* :mod:`~datamodules.video_index`, :mod:`~datamodules.video_decoding`,
  :mod:`~datamodules.clip_sampling`, :mod:`~datamodules.video`: Kinetics-style videos;
* :mod:`~datamodules.demo_cache`, :mod:`~datamodules.demo`, :mod:`~datamodules.video_demo`: the
  bundled demo sets, built once.
"""
from .collate import collate_images, collate_video_eval, collate_video_train
from .datamodule import ShardedDataModule, check_same_classes
from .demo import DEMO_ROOT_DEFAULT, DemoDataModule, build_demo_dataset
from .image_folder import ImageDataModule, ImageFolderDataset
from .loading import ResumableSampler, SampleKey, ShardSampler
from abswin.normalization import IMAGENET_MEAN, IMAGENET_STD

from .on_device import to_model_input
from .transforms import decode, eval_transform, train_transform
from .video import VideoDataModule, VideoDataset
from .video_decoding import read_frames
from .video_demo import VideoDemoDataModule, build_video_demo_dataset, write_mp4

collate_skip_none = collate_images  # the image collate's former name

__all__ = [
    "DEMO_ROOT_DEFAULT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DemoDataModule",
    "ImageDataModule",
    "ImageFolderDataset",
    "ResumableSampler",
    "SampleKey",
    "ShardSampler",
    "ShardedDataModule",
    "build_demo_dataset",
    "check_same_classes",
    "collate_images",
    "collate_skip_none",
    "collate_video_eval",
    "collate_video_train",
    "decode",
    "eval_transform",
    "to_model_input",
    "train_transform",
    "VideoDataModule",
    "VideoDataset",
    "read_frames",
    "VideoDemoDataModule",
    "build_video_demo_dataset",
    "write_mp4",
]
