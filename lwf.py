"""Learning without Forgetting: L_det + alpha * MSE of the whole raw head output against the teacher.

    python lwf.py --task 15p1 --cfg cfg/VOC.yml [--alpha 1]
"""

from nanodet.continual.cli import main

if __name__ == "__main__":
    main("lwf", description=__doc__)
