"""Replay: a buffer of earlier tasks' images (default 250), half of every batch.

    python replay.py --task 15p1 --cfg cfg/VOC.yml [--buffer-size 250] [--buffer-policy random|balanced]
    python replay.py --task 15p1 --cfg cfg/VOC.yml --latent   # Latent Replay: stored backbone features
"""

from nanodet.continual.cli import main

if __name__ == "__main__":
    main("replay", description=__doc__,
         options=("--buffer-size", "--buffer-policy", "--latent-dtype", "--freeze-backbone-from"),
         method_for_args=lambda args: "latent_replay" if args.latent else "replay")
