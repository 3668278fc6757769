"""Teacher-output cache: misses then hits, persistence across runs, exact views, key invalidation."""
import pytest
import torch

from kd2edge.batches import apply_views
from kd2edge.distill.teacher_cache import TeacherCache, view_pool
from kd2edge.distill.teacher import load_teacher


@pytest.fixture(scope="module")
def images(cifar10_test):
    return cifar10_test.x[:64]


def test_hit_miss_persistence_and_exact_views(tmp_path, images, teacher_path):
    teacher = load_teacher(str(teacher_path("resnet20")), "resnet20")
    x = torch.from_numpy(images)
    cache = TeacherCache(teacher, images, "cifar10-test64", views_per_image=4, root=tmp_path)
    idx = torch.arange(0, 64, 2)
    slot = torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(0))
    xv = apply_views(x[idx], cache.views(idx, slot))
    first = cache.logits(idx, slot, xv)
    assert (cache.misses, cache.hits) == (32, 0)
    second = cache.logits(idx, slot, xv)
    assert (cache.misses, cache.hits) == (32, 32) and torch.equal(first, second)
    # the cached logits are the teacher's on exactly the view the student sees (fp16-rounded)
    live = teacher.logits(xv)
    assert torch.allclose(first, live, atol=2e-2, rtol=1e-3)
    other_view = apply_views(x[idx], (cache.views(idx, slot) + 1) % 162)
    assert not torch.allclose(first, teacher.logits(other_view), atol=2e-2)
    # a new cache object (another run) with the same key reuses the file
    again = TeacherCache(teacher, images, "cifar10-test64", views_per_image=4, root=tmp_path)
    assert again.dir == cache.dir
    assert torch.equal(again.logits(idx, slot, xv), first) and (again.misses, again.hits) == (0, 32)
    # a partly filled cache only computes what is missing
    idx2 = torch.arange(64)
    slot2 = torch.zeros(64, dtype=torch.int64)
    slot2[idx] = slot
    again.logits(idx2, slot2, apply_views(x[idx2], again.views(idx2, slot2)))
    assert (again.misses, again.hits) == (32, 64)
    assert again.filled_fraction() == pytest.approx(64 / 256)


def test_logits_do_not_depend_on_how_many_images_missed(tmp_path, images, teacher_path):
    """A lone miss (a nearly warm cache) stores the same fp16 bits as the same image filled in a full batch:
    the teacher never runs on fewer than MIN_BATCH images (at batch 1 its CPU kernels round differently,
    benchmarks/results/cache_numerics.txt)."""
    from kd2edge.distill.teacher_cache import MIN_BATCH

    real = load_teacher(str(teacher_path("resnet20")), "resnet20")
    seen = []

    class Recording:  # the real teacher, recording the batch sizes it is given
        num_classes, cache_id = real.num_classes, real.cache_id

        def logits(self, x):
            seen.append(len(x))
            return real.logits(x)

    x = torch.from_numpy(images[:32])
    idx, slot = torch.arange(32), torch.zeros(32, dtype=torch.int64)
    full = TeacherCache(real, images, "a", views_per_image=1, root=tmp_path / "a").logits(idx, slot, x)
    lone = TeacherCache(Recording(), images, "b", views_per_image=1, root=tmp_path / "b")
    singles = torch.cat([lone.logits(idx[i:i + 1], slot[i:i + 1], x[i:i + 1]) for i in range(32)])
    assert seen == [MIN_BATCH] * 32 and MIN_BATCH >= 7  # 7: the smallest size measured to match batch 128
    assert torch.equal(singles, full)


def test_key_invalidation(tmp_path, images, teacher_path):
    t20 = load_teacher(str(teacher_path("resnet20")), "resnet20")
    t32 = load_teacher(str(teacher_path("resnet32")), "resnet32")
    base = TeacherCache(t20, images, "d", views_per_image=4, root=tmp_path)
    idx, slot = torch.arange(8), torch.zeros(8, dtype=torch.int64)
    x8 = apply_views(torch.from_numpy(images[:8]), base.views(idx, slot))
    base.logits(idx, slot, x8)
    others = [TeacherCache(t32, images, "d", views_per_image=4, root=tmp_path),            # another teacher
              TeacherCache(t20, images, "d", views_per_image=8, root=tmp_path),            # another view set
              TeacherCache(t20, images, "d", views_per_image=4, pad=2, root=tmp_path),     # another view set
              TeacherCache(t20, images[::-1].copy(), "d", views_per_image=4, root=tmp_path),  # other images
              TeacherCache(load_teacher(str(teacher_path("resnet20")), "resnet20", bf16=True), images, "d",
                           views_per_image=4, root=tmp_path)]                              # other precision
    keys = {base.key} | {o.key for o in others}
    assert len(keys) == 6
    for o in others:
        assert o.filled_fraction() == 0.0
        o.logits(idx, slot, apply_views(torch.from_numpy(images[:8]), o.views(idx, slot), o.pad))
        assert o.misses == 8 and o.hits == 0


def test_view_pool_is_fixed_distinct_and_full_when_asked():
    a, b = view_pool(100, 8, 4, True), view_pool(100, 8, 4, True)
    assert torch.equal(a, b) and a.shape == (100, 8)
    assert all(len(set(r.tolist())) == 8 for r in a) and int(a.max()) < 162
    assert torch.equal(view_pool(3, 200, 4, True)[1], torch.arange(162))
