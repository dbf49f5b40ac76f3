"""A deterministic synthetic 20-class detection benchmark that stands in for VOC2007.

Every class has its own identity (a shape, a texture and a colour scheme) and real intra-class
variation (size 12-200 px, aspect, rotation, colour, texture phase and scale, partial occlusion,
truncation at the border). A few pairs are deliberately confusable (hexagon / octagon, disc /
ring, square / frame, pentagon / hexagon, cross / T-shape). Backgrounds are procedural
(gradients, smooth noise, stripes, grids) with clutter that belongs to no class (lines, arcs,
scribbles, speckles). Each image holds 1 to 8 objects of several classes, so in a continual task
old objects appear unlabeled, as in VOC.

Output (VOC layout plus COCO JSON; the same arguments give byte-identical files):

    DIR/JPEGImages/{id}.jpg
    DIR/Annotations/{id}.xml
    DIR/ImageSets/Main/trainval.txt, test.txt
    DIR/annotations/trainval.json, test.json
    DIR/synthetic.json         # the generation arguments; written last, marks a complete set

Boxes are tight around each object's pixels inside the image, in continuous pixel coordinates
(a box [x0, y0, x1, y1] covers pixel columns x0 .. x1-1), identical in the XML and the JSON.

With ``SyntheticSpec(objects="fashion_mnist")`` the objects are real images instead: the 10
Fashion-MNIST classes (70,000 grey 28x28 crops, read from the IDX files of Debian's
``dataset-fashion-mnist`` package or of a folder you name), each crop scaled, sometimes rotated,
tinted and composited by its grey level onto the same backgrounds with the same clutter,
occlusion and truncation rules. The trainval split draws from the 60,000 training crops and the
test split from the 10,000 t10k crops, so test objects are images the detector never saw.

Layout: ``spec`` (class names, object sizes, ``SyntheticSpec``), ``shapes`` (the drawn classes'
outlines and textures), ``fashion_mnist`` (IDX files and crops as objects), ``rendering`` (one
image and its boxes) and ``writing`` (the files, and generating a set on first use).
"""

# Names are re-exported as values: to patch FASHION_MNIST_DIR or the crop cache, patch them in
# ``fashion_mnist``, where they are read.
from .fashion_mnist import (
    CROP_ALPHA_FLOOR,
    CROP_ALPHA_FULL,
    CROP_FREE_ROTATION,
    CROP_SHADE_MIN,
    CROP_STRETCH,
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    CropSource,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
)
from .rendering import MAX_OCCLUDED, MIN_VISIBLE_IN_IMAGE, render_image
from .shapes import CLASS_STYLE
from .spec import FASHION_MNIST_CLASSES, MAX_SIZE, MIN_SIZE, OBJECT_CLASSES, SYNTHETIC_CLASSES, SyntheticSpec
from .writing import ensure_generated, generate, read_spec

__all__ = [
    "CLASS_STYLE",
    "CROP_ALPHA_FLOOR",
    "CROP_ALPHA_FULL",
    "CROP_FREE_ROTATION",
    "CROP_SHADE_MIN",
    "CROP_STRETCH",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "MAX_OCCLUDED",
    "MAX_SIZE",
    "MIN_SIZE",
    "MIN_VISIBLE_IN_IMAGE",
    "OBJECT_CLASSES",
    "SYNTHETIC_CLASSES",
    "CropSource",
    "SyntheticSpec",
    "ensure_generated",
    "find_fashion_mnist",
    "generate",
    "load_fashion_mnist",
    "read_idx",
    "read_spec",
    "render_image",
]
