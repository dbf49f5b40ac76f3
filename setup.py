from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="nanodet-cl",
    version="0.1.0",
    description="NanoDet-Plus on current PyTorch and Lightning, with continual learning of new classes",
    packages=find_packages(include=["nanodet", "nanodet.*"]),
    python_requires=">=3.9",
    install_requires=requirements,
    extras_require={"test": ["pytest>=7"]},
)
