"""The input normalisation every Hiera checkpoint here was trained with (official, timm and ours):
ImageNet's per-channel mean and std of RGB in [0, 1]. The one home of these numbers: the data
modules normalise with them, the analysis pictures undo them, published weights record them."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
