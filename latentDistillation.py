"""Latent Distillation: SID's loss with a frozen backbone shared by teacher and student.

    python latentDistillation.py --task 15p1 --cfg cfg/VOC.yml [--alpha 1] [--beta 1] [--freeze-backbone-from 0]

Only the student's neck and head train (about 0.4 M parameters); the backbone runs once per batch.
"""

from nanodet.continual.cli import main

if __name__ == "__main__":
    main("ld", description=__doc__)
