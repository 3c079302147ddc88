"""Image sources: npz (memory-mapped or streamed), folders, arrays; clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from sfd.eval.sources import ArrayImages, FolderImages, NpzImages, open_images

from .helpers import random_images


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_reads_any_range(tmp_path, save):
    images = random_images(9, size=8)
    path = tmp_path / "samples.npz"
    save(path, images, np.arange(9))  # arr_0 images, arr_1 labels (ignored)
    source = open_images(path)
    assert isinstance(source, NpzImages) and len(source) == 9
    assert (source._memmap is not None) == (save is np.savez)
    for start, stop in [(0, 4), (4, 9), (2, 5), (7, 20)]:  # backwards reads reopen the stream
        np.testing.assert_array_equal(source.read(start, stop), images[start:stop])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((2, 8, 8), np.uint8), "uint8 images of shape"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"\(N, H, W, 3\)"),
    ],
)
def test_npz_rejects_wrong_arrays(tmp_path, array, message):
    path = tmp_path / "bad.npz"
    np.savez(path, array)
    with pytest.raises(ValueError, match=message) as err:
        open_images(path)
    assert "bad.npz" in str(err.value)


def test_npz_without_arr_0(tmp_path):
    path = tmp_path / "stats.npz"
    np.savez(path, mu=np.zeros(3))
    with pytest.raises(ValueError, match="no 'arr_0'"):
        open_images(path)


def test_folder_is_sorted_and_recursive(tmp_path):
    """Files are read in the order of their relative paths (a sub-folder's files between the
    names around it; the suffix's case ignored; other files left out), whatever order they
    were written in, and a range reads exactly those images."""
    images = random_images(4, size=8)
    (tmp_path / "b").mkdir()
    Image.fromarray(images[3]).save(tmp_path / "d.PNG")  # written first, read last
    Image.fromarray(images[1]).save(tmp_path / "b" / "c.png")
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(images[2]).save(tmp_path / "b" / "z.png")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in source.files] == [
        "a.png",
        "b/c.png",
        "b/z.png",
        "d.PNG",
    ]
    np.testing.assert_array_equal(source.read(0, 4), images)
    np.testing.assert_array_equal(source.read(1, 3), images[1:3])
    np.testing.assert_array_equal(source.read(3, 10), images[3:])


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no .png"):
        FolderImages(tmp_path)
    Image.fromarray(random_images(1, size=8)[0]).save(tmp_path / "a.png")
    Image.fromarray(random_images(1, size=9)[0]).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="b.png: size"):
        open_images(tmp_path).read(0, 2)


def test_arrays_in_either_layout():
    images = random_images(4, size=8)
    np.testing.assert_array_equal(ArrayImages(images).read(1, 3), images[1:3])
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(open_images(nchw).read(0, 4), images)


def test_missing_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        open_images(tmp_path / "nope.npz")


def test_folder_with_an_unreadable_file_raises_naming_the_option_or_skips_it(tmp_path):
    images = random_images(2, size=8)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("not an image")
    Image.fromarray(images[1]).save(tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"b.png.*--on-error skip"):
        open_images(tmp_path).read(0, 3)
    source = open_images(tmp_path, on_error="skip")
    assert len(source) == 2
    np.testing.assert_array_equal(source.read(0, 2), images)
