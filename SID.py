"""SID: distil the old and future classes' logits (alpha) and the head towers' features (beta).

    python SID.py --task 15p1 --cfg cfg/VOC.yml [--alpha 1] [--beta 1]
"""

from nanodet.continual.cli import main

if __name__ == "__main__":
    main("sid", description=__doc__)
