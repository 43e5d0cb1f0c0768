"""Runs inside the pinned imagecorruptions venv (.venv-corrupt): corrupt the images of an .npz as the reference does.

Usage: python corruptions_oracle.py IN.npz OUT.npz NAME:SEVERITY:SEED ...
IN.npz holds uint8 images image0, image1, ...; OUT.npz gets "i/NAME/SEVERITY/SEED" for each image and case.

Two adaptations, both outside the corruption arithmetic:
- scikit-image 0.19 (the last that accepts `gaussian(..., multichannel=True)`) has no Python 3.11 wheel; the
  pinned 0.20 is given `channel_axis=-1` instead, which is what 0.19 translated that argument into.
- impulse_noise calls skimage's `random_noise`, which seeds its own Generator from fresh OS entropy; the wrapper
  passes it `seed=np.random.randint(2**32)` from the seeded global RNG, as segformer.corruptions does.
"""

import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import imagecorruptions  # noqa: E402
import imagecorruptions.corruptions as ic  # noqa: E402
from skimage.util import random_noise  # noqa: E402

_gaussian = ic.gaussian


def _gaussian_channel_axis(image, *args, multichannel=None, **kwargs):
    if multichannel:
        kwargs["channel_axis"] = -1
    return _gaussian(image, *args, **kwargs)


def _seeded_random_noise(image, *args, **kwargs):
    return random_noise(image, *args, seed=np.random.randint(2**32), **kwargs)


ic.gaussian = _gaussian_channel_axis
ic.sk.util.random_noise = _seeded_random_noise


def main() -> None:
    images = np.load(sys.argv[1])
    out = {}
    for key in sorted(images.files):
        index = key[len("image"):]
        for case in sys.argv[3:]:
            name, severity, seed = case.split(":")
            np.random.seed(int(seed))
            out[f"{index}/{name}/{severity}/{seed}"] = imagecorruptions.corrupt(images[key], int(severity), name)
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
