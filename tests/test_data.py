"""Data readers on the real shared CIFAR-10 and on CIFAR-100 / ImageFolder / npz fixtures made here;
batch augmentation views on known arrays."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import Normalizer, apply_views, cutout, decode_views, iterate, low_res, normalize, num_views
from kd2edge.data import CIFAR10_CLASSES, STATS, load_dataset


# ---------------------------------------------------------------- real CIFAR-10
def test_cifar10_test_split_in_official_order(cifar10_test):
    ds = cifar10_test
    assert ds.x.shape == (10_000, 32, 32, 3) and ds.x.dtype == np.uint8 and ds.y.dtype == np.int64
    assert ds.y[:5].tolist() == [3, 8, 8, 0, 6]
    assert ds.classes == CIFAR10_CLASSES and np.bincount(ds.y).tolist() == [1000] * 10


def test_cifar10_train_split_order_and_mean(cifar10_dir):
    ds = load_dataset("cifar10", "train", cifar10_dir)
    assert ds.x.shape == (50_000, 32, 32, 3) and ds.y[:5].tolist() == [6, 9, 9, 4, 1]
    mean = ds.x.reshape(-1, 3).mean(0, dtype=np.float64)
    np.testing.assert_allclose(mean, [125.307, 122.950, 113.865], atol=5e-3)
    np.testing.assert_allclose(np.asarray(STATS["cifar10"]["mean"]) * 255, mean, atol=0.05)


def test_limit_and_split_errors(cifar10_dir):
    assert len(load_dataset("cifar10", "test", cifar10_dir, limit=7)) == 7
    with pytest.raises(Kd2EdgeError, match="valid: train, test"):
        load_dataset("cifar10", "val", cifar10_dir)
    with pytest.raises(Kd2EdgeError, match="at least 1"):
        load_dataset("cifar10", "test", cifar10_dir, limit=0)


# ---------------------------------------------------------------- CIFAR-10 errors
def _cifar10_copy(tmp_path, cifar10_dir, n=20):
    """A small cifar-10-batches-py made from the real test batch (bytes keys, like the official files)."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    ds = load_dataset("cifar10", "test", cifar10_dir, limit=n)
    rows = ds.x.transpose(0, 3, 1, 2).reshape(n, -1)
    batch = {b"data": rows, b"labels": ds.y.tolist(), b"batch_label": b"test batch 1 of 1"}
    for f in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        (d / f).write_bytes(pickle.dumps(batch, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, 2))
    return d, ds


def test_cifar10_bytes_keys_read_like_str_keys(tmp_path, cifar10_dir):
    d, ref = _cifar10_copy(tmp_path, cifar10_dir)
    ds = load_dataset("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(ds.x, ref.x)
    assert ds.y.tolist() == ref.y.tolist() and ds.classes == CIFAR10_CLASSES
    assert len(load_dataset("cifar10", "train", tmp_path)) == 5 * 20


def test_missing_cifar_folder_names_the_layout(tmp_path):
    with pytest.raises(Kd2EdgeError, match=r"cifar-10-batches-py/\{data_batch_1..5, test_batch, batches.meta\}"):
        load_dataset("cifar10", "test", tmp_path / "nowhere")
    with pytest.raises(Kd2EdgeError, match=r"cifar-100-python/\{train, test, meta\}"):
        load_dataset("cifar100", "test", tmp_path)


def test_corrupt_pickle_is_a_user_error(tmp_path, cifar10_dir):
    d, _ = _cifar10_copy(tmp_path, cifar10_dir)
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:500])
    with pytest.raises(Kd2EdgeError, match="corrupt dataset file .*test_batch"):
        load_dataset("cifar10", "test", tmp_path)
    (d / "test_batch").write_bytes(pickle.dumps({"labels": [1, 2]}))
    with pytest.raises(Kd2EdgeError, match="missing key 'data'"):
        load_dataset("cifar10", "test", tmp_path)
    (d / "test_batch").unlink()
    with pytest.raises(Kd2EdgeError, match="missing .*test_batch"):
        load_dataset("cifar10", "test", tmp_path)


# ---------------------------------------------------------------- CIFAR-100 fixture
def _cifar100(tmp_path, n=30):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    fine = np.arange(n) * 3 % 100
    coarse = fine // 5
    for split in ("train", "test"):
        obj = {b"data": x.transpose(0, 3, 1, 2).reshape(n, -1), b"fine_labels": fine.tolist(),
               b"coarse_labels": coarse.tolist(), b"filenames": [b"f.png"] * n, b"batch_label": split.encode()}
        (d / split).write_bytes(pickle.dumps(obj, protocol=2))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (d / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return x, fine, coarse


def test_cifar100_fine_and_coarse(tmp_path):
    x, fine, coarse = _cifar100(tmp_path)
    ds = load_dataset("cifar100", "test", tmp_path)
    np.testing.assert_array_equal(ds.x, x)
    assert ds.y.tolist() == fine.tolist() and ds.extra["coarse"].tolist() == coarse.tolist()
    assert ds.num_classes == 100 and ds.classes[7] == "fine7" and ds.extra_classes["coarse"][19] == "coarse19"
    sub = load_dataset("cifar100", "train", tmp_path, limit=4)
    assert sub.extra["coarse"].tolist() == coarse[:4].tolist() and len(sub.extra_classes["coarse"]) == 20


# ---------------------------------------------------------------- ImageFolder and npz fixtures
def _image_folder(root, sizes=((40, 40), (32, 48), (64, 64))):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c, mode in (("cat", "RGB"), ("dog", "L")):
            (root / split / c).mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                shape = (h, w, 3) if mode == "RGB" else (h, w)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / split / c / f"{i}.png")
    (root / "train" / "bird").mkdir()  # a class only train has: labels must still agree across splits
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "bird" / "0.jpg")
    (root / "test" / "cat" / "notes.txt").write_text("not an image")


def test_image_folder_rgb_grayscale_mixed_sizes(tmp_path):
    _image_folder(tmp_path / "pets")
    ds = load_dataset(str(tmp_path / "pets"), "test")
    assert ds.classes == ["bird", "cat", "dog"] and ds.y.tolist() == [1, 1, 1, 2, 2, 2]
    assert ds.x.shape == (6, 40, 40, 3) and ds.x.dtype == np.uint8  # first image's size, square
    gray = ds.x[3]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert not (ds.x[0, ..., 0] == ds.x[0, ..., 1]).all()
    train = load_dataset(str(tmp_path / "pets"), "train", size=(16, 24))
    assert train.x.shape == (7, 16, 24, 3) and train.y.tolist() == [0, 1, 1, 1, 2, 2, 2]


def test_image_folder_errors(tmp_path):
    with pytest.raises(Kd2EdgeError, match=r"train,test\}/<class>"):
        load_dataset(str(tmp_path), "test")
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(Kd2EdgeError, match="no images"):
        load_dataset(str(tmp_path), "test")
    (tmp_path / "test" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(Kd2EdgeError, match="cannot read image .*bad.png"):
        load_dataset(str(tmp_path), "test")


def test_npz_color_grayscale_and_per_split(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (9, 20, 24, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(9) % 3, classes=np.array(["r", "g", "b"]))
    ds = load_dataset(str(tmp_path / "a.npz"), "test")  # no split: the last of each class is the test split
    np.testing.assert_array_equal(ds.x, x[6:])
    assert ds.classes == ["r", "g", "b"] and ds.y.tolist() == [0, 1, 2] and ds.name == "a"
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "a.npz"), "train").x, x[:6])
    np.savez(tmp_path / "g.npz", x_test=x[..., 0], y_test=np.zeros(9, np.int32))
    g = load_dataset(str(tmp_path / "g.npz"), "test")
    assert g.x.shape == (9, 20, 24, 3) and (g.x[..., 2] == x[..., 0]).all() and g.classes == ["0"]
    np.savez(tmp_path / "s.npz", x_train=x[:5], y_train=np.ones(5), x_test=x[5:], y_test=np.zeros(4))
    assert len(load_dataset(str(tmp_path / "s.npz"), "train")) == 5
    assert len(load_dataset(str(tmp_path / "s.npz"), "test")) == 4


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(Kd2EdgeError, match="lacks array 'x'"):
        load_dataset(str(tmp_path / "nox.npz"))
    np.savez(tmp_path / "float.npz", x=np.zeros((2, 4, 4, 3), np.float32), y=np.zeros(2))
    with pytest.raises(Kd2EdgeError, match="must be uint8"):
        load_dataset(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 4, 4, 3), np.uint8), y=np.array([0, 5, 0, 5]), classes=np.array(["a", "b"]))
    with pytest.raises(Kd2EdgeError, match=r"labels must lie in \[0, 2\)"):
        load_dataset(str(tmp_path / "labels.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(Kd2EdgeError, match="cannot read .*junk.npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    with pytest.raises(Kd2EdgeError, match="not found"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(Kd2EdgeError, match="valid names are cifar10, cifar100"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- batches: normalization and views
def test_normalize_matches_normalizer_module():
    x = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8)
    prep = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    ref = normalize(x, prep)
    assert ref.shape == (4, 3, 8, 8)
    expected = (x.permute(0, 3, 1, 2).double() / 255 - torch.tensor(prep["mean"]).view(1, 3, 1, 1).double()) / \
        torch.tensor(prep["std"]).view(1, 3, 1, 1).double()
    torch.testing.assert_close(ref.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(Normalizer(prep["mean"], prep["std"], channels_last=True)(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(Normalizer(prep["mean"], prep["std"])(x.permute(0, 3, 1, 2)), ref, atol=1e-5, rtol=0)


def _reference_view(img, flip, dy, dx):
    """out[i, j] = img[i + dy, j + dx] (zero outside), then mirrored left-right when flip."""
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[i, j] = img[i + dy, j + dx]
    return out[:, ::-1] if flip else out


def test_views_translate_and_flip_known_arrays():
    img = (np.arange(5 * 6 * 2).reshape(5, 6, 2) + 1).astype(np.uint8)
    x = torch.from_numpy(np.stack([img] * num_views(2)))
    views = torch.arange(num_views(2))
    out = apply_views(x, views, pad=2).numpy()
    flip, dy, dx = decode_views(views, 2)
    for v in range(num_views(2)):
        np.testing.assert_array_equal(out[v], _reference_view(img, int(flip[v]), int(dy[v]), int(dx[v])), str(v))
    # spot facts: view of (no flip, dy=1, dx=0) moves content up one row and zero-fills the last row
    side = 5
    v = 0 * side * side + (1 + 2) * side + (0 + 2)
    assert (out[v][:-1] == img[1:]).all() and (out[v][-1] == 0).all()
    identity = 0 * side * side + 2 * side + 2
    assert (out[identity] == img).all() and (out[identity + side * side] == img[:, ::-1]).all()


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(3, 2, 8, 10)
    centers = torch.tensor([[4, 5], [0, 0], [7, 9]])  # interior; top-left corner; bottom-right corner
    out = cutout(x, centers, 4)
    zero = (out == 0).all(1)  # every channel zeroed at the same pixels
    assert ((out == 0) | (out == 1)).all() and torch.equal(zero, (out == 0).any(1))
    assert torch.equal(zero[0].nonzero().min(0).values, torch.tensor([2, 3]))  # rows 2..5, cols 3..6
    assert zero[0].sum() == 16 and zero[0, 2:6, 3:7].all()
    assert zero[1].sum() == 4 and zero[1, :2, :2].all()  # rows/cols -2..1 clipped to 0..1
    assert zero[2].sum() == 9 and zero[2, 5:, 7:].all()  # rows 5..8 -> 5..7, cols 7..10 -> 7..9
    assert cutout(x, centers, 0) is x


def test_cutout_is_a_validated_distill_key():
    from kd2edge.distill.config import resolve_config

    assert resolve_config(method="ce")["cutout"] == 0 and resolve_config({"cutout": 8}, method="ce")["cutout"] == 8
    with pytest.raises(Kd2EdgeError, match="cutout"):
        resolve_config({"cutout": -1}, method="ce")


def test_low_res_shrinks_normalized_input_and_keeps_its_layout():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = low_res(x, 0.75)
    assert out.shape == (2, 3, 24, 24) and out.is_contiguous(memory_format=torch.channels_last)
    # antialiased bilinear: each output pixel is a local average, so the image keeps its mean and its range
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), rtol=1e-3)
    assert out.min() >= x.min() and out.max() <= x.max()
    assert low_res(x[..., :20, :], 0.5).shape == (2, 3, 10, 16)
    assert low_res(x, 1.0) is x and low_res(x, 0.99) is x  # 31.68 rounds to 32: nothing to do


def test_low_res_is_part_of_the_budget_recipe_only():
    from kd2edge.distill.config import resolve_config

    cfg = resolve_config({"low_res_scale": 0.5, "low_res_until": 0.6}, method="ce")
    assert (cfg["low_res_scale"], cfg["low_res_until"]) == (0.5, 0.6)
    assert resolve_config(method="ce")["low_res_scale"] == 1.0  # epoch-counted runs: full size throughout
    assert resolve_config(method="ce", time_budget=377)["low_res_scale"] == 0.75
    for bad in ({"low_res_scale": 0}, {"low_res_scale": 1.5}, {"low_res_until": 1.5}):
        with pytest.raises(Kd2EdgeError, match="low_res"):
            resolve_config(bad, method="ce")


def test_view_ids_round_trip():
    pad = 4
    side = 2 * pad + 1
    views = torch.arange(num_views(pad))
    flip, dy, dx = decode_views(views, pad)
    assert num_views(pad) == 162 and num_views(pad, flip=False) == 81
    assert flip.min() == 0 and flip.max() == 1 and dy.min() == -pad and dx.max() == pad
    assert torch.equal(flip * side * side + (dy + pad) * side + (dx + pad), views)
    assert len({(int(a), int(b), int(c)) for a, b, c in zip(flip, dy, dx)}) == 162


def test_iterate_covers_every_index_once():
    g = torch.Generator().manual_seed(0)
    batches = list(iterate(103, 10, shuffle=True, generator=g))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    assert torch.cat(batches).tolist() != list(range(103))
    assert [len(b) for b in iterate(103, 10, shuffle=False, drop_last=True)] == [10] * 10
    shards = [torch.cat(list(iterate(103, 8, True, torch.Generator().manual_seed(1), rank=r, world=2)))
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51 and not set(shards[0].tolist()) & set(shards[1].tolist())
