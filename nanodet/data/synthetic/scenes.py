"""Which objects an image holds: the dense profile (1 to 8 objects of independent, uniform classes)
or the VOC profile, shaped like VOC2007 trainval (docs/anchors.md).

The VOC profile draws a scene: a primary class, by how often VOC's class of the same index is in
an image; a person beside it (VOC's people appear with most classes); another class of its group
(vehicles, animals, indoor things, which co-occur in VOC). Each class in the scene then gets one
object or more, geometric with the mean of VOC's objects per image holding that class, so person,
sheep and bottle come in crowds and most classes alone. The primary probabilities are solved so
that each class's share of images is VOC's.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# VOC2007 trainval, per class in the usual order: images holding it, its non-difficult objects.
VOC_IMAGES = np.array([238, 243, 330, 181, 244, 186, 713, 337, 445, 141,
                       200, 421, 287, 245, 2008, 245, 96, 229, 261, 256], dtype=np.float64)
VOC_OBJECTS = np.array([306, 353, 486, 290, 505, 229, 1250, 376, 798, 259,
                        215, 510, 362, 339, 4690, 514, 257, 248, 297, 324], dtype=np.float64)
VOC_TRAINVAL_IMAGES = 5011
PERSON = 14
SCENE_GROUPS = {
    "vehicle": (0, 1, 3, 5, 6, 13, 18),   # aeroplane, bicycle, boat, bus, car, motorbike, train
    "animal": (2, 7, 9, 11, 12, 16),      # bird, cat, cow, dog, horse, sheep
    "indoor": (4, 8, 10, 15, 17, 19),     # bottle, chair, diningtable, pottedplant, sofa, tvmonitor
}
PERSON_BESIDE = 0.3  # chance that a scene of another primary class also holds people
MAX_OBJECTS_PER_CLASS = 10  # VOC's crowds are cut here: a 320x320 image has room for so many


@lru_cache(maxsize=1)
def _group_of() -> dict[int, tuple[int, ...]]:
    """Each grouped class's group (person belongs to none: it joins any scene)."""
    group = {}
    for members in SCENE_GROUPS.values():
        for c in members:
            group[c] = members
    return group


@lru_cache(maxsize=1)
def voc_scene_model() -> tuple[np.ndarray, float]:
    """(primary class probabilities, chance of a group-mate) that give each class VOC's share of
    images and VOC's 1.46 distinct classes per image."""
    share = VOC_IMAGES / VOC_TRAINVAL_IMAGES
    group = _group_of()
    # Person: share = p + PERSON_BESIDE * (1 - p). Distinct classes: 1 + (PERSON_BESIDE + mate) * (1 - p).
    p_person = (share[PERSON] - PERSON_BESIDE) / (1 - PERSON_BESIDE)
    mate = (share.sum() - 1) / (1 - p_person) - PERSON_BESIDE
    primary = np.where(np.arange(20) == PERSON, p_person, share)
    for _ in range(200):  # fixed point: scale each class's primary probability to its share
        others = primary.copy()
        others[PERSON] = 0
        others *= (1 - p_person) / others.sum()
        got = others.copy()
        for k in range(20):
            if k == PERSON:
                continue
            mates = [c for c in group[k] if c != k]
            weights = VOC_IMAGES[mates] / VOC_IMAGES[mates].sum()
            got[mates] += others[k] * mate * weights
        target = share.copy()
        target[PERSON] = 0
        primary = np.where(np.arange(20) == PERSON, p_person, others * np.divide(target, got, where=got > 0,
                                                                                 out=np.ones(20)))
    others = primary.copy()
    others[PERSON] = 0
    primary = np.where(np.arange(20) == PERSON, p_person, others * (1 - p_person) / others.sum())
    return primary, float(mate)


def sample_voc_scene(rng: np.random.Generator) -> list[int]:
    """The labels of one image's objects (a class repeated once per object), VOC-shaped."""
    primary, mate = voc_scene_model()
    group = _group_of()
    k = int(rng.choice(20, p=primary))
    classes = [k]
    if k != PERSON:
        if rng.random() < PERSON_BESIDE:
            classes.append(PERSON)
        if rng.random() < mate:
            mates = [c for c in group[k] if c != k]
            weights = VOC_IMAGES[mates] / VOC_IMAGES[mates].sum()
            classes.append(int(rng.choice(mates, p=weights)))
    labels = []
    for c in classes:
        mean = VOC_OBJECTS[c] / VOC_IMAGES[c]
        count = min(int(rng.geometric(1 / mean)), MAX_OBJECTS_PER_CLASS)  # 1, 2, ... with mean `mean`
        labels += [c] * count
    return labels
