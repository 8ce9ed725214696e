from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="keep-vfsr",
    version="0.1.0",
    description="KEEP: Kalman-inspired feature propagation for video face super-resolution (ECCV 2024)",
    packages=find_packages(include=["keep", "keep.*"]),
    package_data={"keep.evaluation": ["published.yml"]},  # the dvface table's published rows
    python_requires=">=3.10",
    install_requires=requirements,
)
