"""Files -> batches: images ``(float32 [B, 3, H, W] ImageNet-normalised, int64 [B])``; videos: see video.py.

Knows nothing about models; every number is a constructor argument (Hydra ``_target_``).
"""
from .demo import DEMO_ROOT_DEFAULT, DemoDataModule, build_demo_dataset
from .image_folder import ImageDataModule, ImageFolderDataset, collate_skip_none
from .loading import ResumableSampler, SampleKey, ShardedDataModule, ShardSampler
from .transforms import IMAGENET_MEAN, IMAGENET_STD, RandAugmentMstd, decode, eval_transform, train_transform
from .video import VideoDataModule, VideoDataset, read_frames
from .video_demo import VideoDemoDataModule, build_video_demo_dataset, write_mp4

__all__ = [
    "DEMO_ROOT_DEFAULT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DemoDataModule",
    "ImageDataModule",
    "ImageFolderDataset",
    "RandAugmentMstd",
    "ResumableSampler",
    "SampleKey",
    "ShardSampler",
    "ShardedDataModule",
    "build_demo_dataset",
    "collate_skip_none",
    "decode",
    "eval_transform",
    "train_transform",
    "VideoDataModule",
    "VideoDataset",
    "read_frames",
    "VideoDemoDataModule",
    "build_video_demo_dataset",
    "write_mp4",
]
