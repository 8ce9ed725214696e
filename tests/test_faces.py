"""Restoring chosen faces (`--faces`), as a user meets it: `inference.py` in a subprocess on a clip of two real
people (tests/footage.py's `two_person_frames`: the sample clip's man beside scikit-image's astronaut; tracks 0,
the astronaut, and 1, the man, who is larger), the output decoded with PyAV and every frame as written
(`--save_frames`) compared with the input's pixels. The reference photos are another frame of the man and the
astronaut's photo mirrored. `test_identity_distances` prints the distances docs/inference.md tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from footage import REPO, sample_frames, two_person_frames, write_clip

from keep.background import resize
from keep.image import read_image, write_image
from keep.video import open_input
from keep.video.pictures import rgb_of_planes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: see conftest.one_thread

FRAMES = 12
ASTRONAUT, MAN = 0, 1  # their track ids in the two-person clip
RUN = [
    sys.executable, "inference.py", "--model", "preset:tiny", "--detector", "retinaface_mobilenet", "--flow", "dis",
    "--threads", "1", "--save_frames", "--set", "overlap=off", "save_faces=true",
]  # fmt: skip
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> dict[str, Path]:
    """The two-person clip (with a sound track), the reference photos, and the clip's frames as decoded."""
    from skimage.data import astronaut

    folder = tmp_path_factory.mktemp("faces")
    clip = write_clip(folder / "two.mp4", two_person_frames(FRAMES), fps=Fraction(25), audio=[("aac", "und")])
    man, woman, pair = folder / "man.png", folder / "astronaut.jpg", folder / "pair.png"
    write_image(man, sample_frames(1, start=60)[0])  # a frame of the man the clip does not have
    write_image(woman, np.ascontiguousarray(astronaut()[:, ::-1]))
    write_image(pair, two_person_frames(1, start=60)[0])  # both: the man's face is the larger
    return {"clip": clip, "man": man, "astronaut": woman, "pair": pair, "folder": folder}


def inference(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*RUN, *args], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def restore(footage: dict, out: Path, *args: str) -> dict:
    """Run inference.py on the clip; its summary."""
    result = inference("-i", str(footage["clip"]), "-o", str(out), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "two_summary.json").read_text())


def box(corners: list, scale: int = 1) -> tuple[slice, slice]:
    """The pixels of a face's aligned crop (its corners' bounding box, at the output's scale)."""
    corners = np.array(corners) * scale
    left, top = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    right, bottom = np.ceil(corners.max(0)).astype(int)
    return slice(top, bottom), slice(left, right)


def check_one_face(footage: dict, out: Path, restored: int, left: int, upscale: int = 1) -> None:
    """Every frame: the face of track `left` is the input's (its pixels; the bicubic background at --upscale > 1)
    bit for bit, the face of `restored` changed, nothing changed elsewhere; the video keeps frames and sound."""
    records = [json.loads(line)["faces"] for line in (out / "two_faces.jsonl").read_text().splitlines()]
    written = [read_image(path) for path in sorted((out / "two" / "frames").glob("*.png"))]
    reader = open_input(footage["clip"])
    # the background as the pipeline makes it: the input's own planes, each upsampled, as a player shows them
    inputs = [
        frame.rgb if upscale == 1 else rgb_of_planes([resize(p, upscale) for p in frame.planes], reader.colour)
        for frame in reader
    ]
    assert len(records) == len(written) == len(inputs) == FRAMES
    with av.open(str(out / "two.mp4")) as container:  # the video as a player decodes it
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(container.streams.audio) == 1
    assert len(decoded) == FRAMES and decoded[0].shape == (144 * upscale, 352 * upscale, 3)
    for rgb, result, faces, played in zip(inputs, written, records, decoded, strict=True):
        faces = {face["track"]: face for face in faces}
        assert faces[restored].get("restored", True) and faces[left]["restored"] is False
        background = rgb
        kept, changed = box(faces[left]["corners"], upscale), box(faces[restored]["corners"], upscale)
        assert (result[kept] == background[kept]).all()
        outside = np.ones(result.shape[:2], bool)
        outside[changed] = False
        assert (result[outside] == background[outside]).all()
        # decoded: the face left alone differs from the input by the encoding alone, the chosen one far more
        difference = np.abs(played.astype(int) - background)
        assert difference[changed].mean() > 5 + 2 * difference[kept].mean(), (
            difference[changed].mean(),
            difference[kept].mean(),
        )


@pytest.mark.parametrize(
    ("photo", "person", "other", "grouping"),
    [("man", MAN, ASTRONAUT, "overlap=off"), ("astronaut", ASTRONAUT, MAN, "overlap=threads stage_groups=gpu")],
)
def test_only_the_person_in_the_photo_is_restored(footage, tmp_path, photo, person, other, grouping):
    """Either person by a photo; the second also with the GPU's grouping (the survey and the restoring pass
    share one detector in the main process)."""
    summary = restore(footage, tmp_path, "--faces", str(footage[photo]), "--set", *grouping.split())
    assert summary["choice"]["restored_tracks"] == [person] and summary["choice"]["identity_threshold"] == 0.6
    tracks = {entry["track"]: entry for entry in summary["track_list"]}
    assert tracks[person]["distance"] < 0.6 < tracks[other]["distance"]
    assert tracks[person]["restored"] and not tracks[other]["restored"]
    assert tracks[person]["frames"] == tracks[other]["frames"] == FRAMES
    check_one_face(footage, tmp_path, person, other)


def test_the_largest_face_and_a_track_id_each_restore_one_face(footage, tmp_path):
    summary = restore(footage, tmp_path / "largest", "--faces", "largest", "--set", "overlap=processes")  # the default
    sizes = {entry["track"]: entry["size"] for entry in summary["track_list"]}
    assert summary["choice"]["restored_tracks"] == [MAN] and sizes[MAN] > sizes[ASTRONAUT]
    check_one_face(footage, tmp_path / "largest", MAN, ASTRONAUT)
    # a track id, at --upscale 2: the face left alone is the upscaled background, as everything else
    summary = restore(footage, tmp_path / "id", "--faces", str(ASTRONAUT), "--upscale", "2")
    assert summary["choice"]["restored_tracks"] == [ASTRONAUT] and summary["track_frames"] == {"0": 12, "1": 12}
    check_one_face(footage, tmp_path / "id", ASTRONAUT, MAN, upscale=2)


def test_nobody_matching_is_said_and_the_output_is_the_input(footage, tmp_path):
    """A photo of both people: the larger face, the man's, is the person (said so); with a threshold under his
    distance nobody matches."""
    threshold = ("--set", "identity_threshold=0.2")  # the man's track is at about 0.45
    result = inference("-i", str(footage["clip"]), "-o", str(tmp_path), "--faces", str(footage["pair"]), *threshold)
    assert result.returncode == 0
    assert "pair.png shows 2 faces: the largest (" in result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "no track matched pair.png: the closest, track 1, is at identity distance 0." in warning
    assert "not under the threshold 0.2" in warning and "the network did not run" in warning
    summary = json.loads((tmp_path / "two_summary.json").read_text())
    assert summary["faces"] == 0 and summary["timings"]["network"] == 0 and summary["timings"]["detect"] > 0
    written = [read_image(path) for path in sorted((tmp_path / "two" / "frames").glob("*.png"))]
    inputs = [frame.rgb for frame in open_input(footage["clip"])]
    assert len(written) == FRAMES and all((a == b).all() for a, b in zip(written, inputs, strict=True))


def test_bad_choices_are_one_error_line_and_nothing_is_written(footage, tmp_path):
    """Each a real `inference.py` (run side by side): exit 2, one `error:` line, no output folder."""
    folder = footage["folder"]
    (folder / "notes.txt").write_text("not a photo\n")
    write_image(folder / "wall.png", np.full((120, 160, 3), 128, np.uint8))
    cases = {
        "missing.jpg": "photo not found",
        str(folder / "notes.txt"): "not an image",
        str(folder / "wall.png"): "no face found in the photo",
        "0,,2": "'' is not a track id",
        "0,-2": "track ids are 0 or more",
    }
    runs = {}
    for n, faces in enumerate(cases):
        command = [*RUN, "-i", str(footage["clip"]), "-o", str(tmp_path / str(n)), "--faces", faces]
        runs[faces] = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for n, (faces, message) in enumerate(cases.items()):
        _, err = runs[faces].communicate(timeout=TIMEOUT_S)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert runs[faces].returncode == 2 and len(errors) == 1 and message in errors[0], (faces, err[-2000:])
        assert "Traceback" not in err and not (tmp_path / str(n)).exists()


def test_identity_distances(footage, tmp_path):
    """The identity distance of each track of the two-person clip to photos of the same and of the other person
    (the threshold, 0.6, between them): `python -m pytest tests/test_faces.py -k distances -s` prints them.
    Through the pipeline's API with a threshold of 0, so the survey measures and nothing is restored."""
    from skimage.data import astronaut

    from keep.pipeline import BuildOptions, Pipeline, RunOptions

    photos = {
        "man, frame 60 of the sample clip": footage["man"],
        "man, frame 74 of the sample clip": tmp_path / "man74.png",
        "astronaut's photo, mirrored": footage["astronaut"],
        "astronaut's photo, grey, 256 px": tmp_path / "astronaut_grey.png",
    }
    write_image(photos["man, frame 74 of the sample clip"], sample_frames(1, start=74)[0])
    grey = astronaut()[::2, ::2].mean(-1, keepdims=True).round().astype(np.uint8).repeat(3, -1)
    write_image(photos["astronaut's photo, grey, 256 px"], grey)
    options = BuildOptions(model="preset:tiny", detector="retinaface_mobilenet", flow="dis", overlap="off")
    same, different = [], []
    print("\nidentity distance | track 0 (astronaut) | track 1 (man)")
    with Pipeline(options) as pipeline:
        for n, (name, photo) in enumerate(photos.items()):
            settings = RunOptions(faces=str(photo), identity_threshold=0.0)
            summary = pipeline.run(footage["clip"], tmp_path / str(n), settings, progress=False)
            distances = {entry["track"]: entry["distance"] for entry in summary["track_list"]}
            person = MAN if name.startswith("man") else ASTRONAUT
            same.append(distances[person])
            different.append(distances[1 - person])
            print(f"{name} | {distances[ASTRONAUT]:.3f} | {distances[MAN]:.3f}")
    print(f"same person: {min(same):.3f}-{max(same):.3f}; different people: {min(different):.3f}-{max(different):.3f}")
    assert max(same) < 0.6 < min(different)


def test_the_survey_keeps_a_bounded_even_sample_and_replays_every_face(tmp_path):
    """Memory flat over the video's length: a track of 5000 faces keeps 16-31 evenly spaced samples, and the
    records read back a chunk at a time give every frame its faces (frames without one: none)."""
    from keep.pipeline.survey import SAMPLES, RecordReader, RecordWriter, TrackSurvey

    survey = TrackSurvey()
    for n in range(5000):
        survey.add(n, (float(n), None) if survey.wants_sample() else None)
    ordinals = [size for size, _ in survey.samples]
    assert SAMPLES <= len(ordinals) < 2 * SAMPLES and ordinals[0] == 0
    assert len(set(np.diff(ordinals))) == 1 and ordinals[-1] > 5000 - 2 * np.diff(ordinals)[0]  # even, to the end
    assert survey.summary()["frames"] == 5000 and survey.summary()["size"] == np.median(ordinals)

    rng = np.random.default_rng(0)
    frames = {i: {t: rng.normal(size=(5, 2)) for t in range(i % 3)} for i in range(200)}  # 0, 1 or 2 faces
    writer = RecordWriter(tmp_path / "records")
    for index, faces in frames.items():
        writer.write(index, faces)
    writer.close()
    reader = RecordReader(tmp_path / "records")
    reader.CHUNK = 7  # records per read: frames straddle the chunks
    for index, faces in frames.items():
        replayed = reader.faces(index)
        assert replayed.keys() == faces.keys() and all((replayed[t] == faces[t]).all() for t in faces)
    reader.close()


def test_choices_are_parsed_before_anything_is_loaded(tmp_path):
    from keep.errors import KeepError
    from keep.pipeline.choice import parse_faces

    assert parse_faces(" all ").kind == "all" and parse_faces("largest").kind == "largest"
    assert parse_faces("2, 0").ids == {0, 2} and parse_faces("7").ids == {7}
    write_image(tmp_path / "p.webp", np.zeros((8, 8, 3), np.uint8))
    assert parse_faces(str(tmp_path / "p.webp")).photo == tmp_path / "p.webp"
    for text, message in [
        ("everyone", "expected all, largest, track ids"), ("1;2", "expected all, largest"), ("", "expected all"),
        (str(tmp_path), "a folder, not a photo"), ("1,a", "expected all"), ("3-4", "'3-4' is not a track id"),
    ]:  # fmt: skip
        with pytest.raises(KeepError, match=message):
            parse_faces(text)
