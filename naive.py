"""Naive fine-tuning: each task trains on its own boxes only (the lower bound).

    python naive.py --task 15p1 --cfg cfg/VOC.yml
    python naive.py --task joint --cfg cfg/VOC.yml     # joint training, the upper bound
"""

from nanodet.continual.cli import main

if __name__ == "__main__":
    main("naive", description=__doc__)
