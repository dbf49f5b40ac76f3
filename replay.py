"""Replay: a buffer of earlier tasks' images (default 250), half of every batch.

    python replay.py --task 15p1 --cfg cfg/VOC.yml [--buffer-size 250] [--buffer-policy random|balanced]
    python replay.py --task 15p1 --cfg cfg/VOC.yml --latent   # Latent Replay: stored backbone features
"""

from nanodet.continual.cli import main

if __name__ == "__main__":
    main("replay", description=__doc__,
         variants={"latent": ("latent_replay", "Latent Replay: store frozen-backbone feature maps instead of images")})
