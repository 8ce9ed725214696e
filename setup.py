from pathlib import Path

from setuptools import find_packages, setup


def requirements(name: str) -> list[str]:
    """The requirement lines of a requirements file beside this one, comments left out."""
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="keep-vfsr",
    version="0.1.0",
    description="KEEP: Kalman-inspired feature propagation for video face super-resolution (ECCV 2024)",
    license="Apache-2.0",  # this code; the released weights keep their own licence (weights/README.md)
    license_files=["LICENSE"],
    classifiers=["License :: OSI Approved :: Apache Software License", "Programming Language :: Python :: 3"],
    packages=find_packages(include=["keep", "keep.*"]),
    package_data={"keep.evaluation": ["published.yml"]},  # the dvface table's published rows
    python_requires=">=3.10",
    install_requires=requirements("requirements.txt"),
    extras_require={"ray": requirements("requirements-ray.txt")},  # pip install .[ray]: --set engine=ray
)
