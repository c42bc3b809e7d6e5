import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nullearn.masks import SinkGeometry, check_source_ids

# Exact sinks of a few sources. A JAX upgrade that changes fold_in or the
# threefry bits fails here, instead of silently re-assigning every source.
GOLDEN_1B = {  # (source id, layer) -> every sink, the 1B geometry (500 + 7692, 100 active)
  (0, None): [
    76,
    131,
    163,
    257,
    359,
    415,
    511,
    545,
    659,
    760,
    813,
    896,
    938,
    1034,
    1090,
    1222,
    1239,
    1356,
    1448,
    1498,
    1571,
    1689,
    1697,
    1830,
    1911,
    1992,
    2067,
    2135,
    2170,
    2245,
    2354,
    2395,
    2516,
    2592,
    2642,
    2726,
    2831,
    2863,
    2989,
    3037,
    3085,
    3204,
    3247,
    3320,
    3449,
    3491,
    3618,
    3694,
    3731,
    3801,
    3893,
    3965,
    4013,
    4099,
    4199,
    4249,
    4332,
    4424,
    4522,
    4548,
    4626,
    4739,
    4802,
    4891,
    4931,
    5013,
    5125,
    5213,
    5290,
    5381,
    5397,
    5472,
    5569,
    5670,
    5773,
    5838,
    5912,
    5960,
    6054,
    6134,
    6203,
    6263,
    6377,
    6416,
    6507,
    6618,
    6647,
    6754,
    6840,
    6856,
    6978,
    7013,
    7141,
    7195,
    7242,
    7333,
    7457,
    7502,
    7590,
    7619,
  ],
  (1, None): [
    12,
    136,
    166,
    297,
    348,
    403,
    484,
    592,
    643,
    756,
    805,
    898,
    965,
    1034,
    1099,
    1230,
    1259,
    1363,
    1425,
    1514,
    1604,
    1659,
    1767,
    1804,
    1898,
    1995,
    2050,
    2140,
    2212,
    2307,
    2380,
    2453,
    2528,
    2543,
    2680,
    2732,
    2782,
    2910,
    2959,
    3016,
    3140,
    3185,
    3295,
    3367,
    3463,
    3494,
    3557,
    3644,
    3707,
    3802,
    3875,
    3957,
    4005,
    4109,
    4227,
    4302,
    4334,
    4394,
    4520,
    4563,
    4673,
    4769,
    4779,
    4884,
    4961,
    5060,
    5103,
    5216,
    5276,
    5337,
    5413,
    5488,
    5600,
    5635,
    5747,
    5793,
    5898,
    5944,
    6077,
    6106,
    6202,
    6259,
    6344,
    6439,
    6495,
    6599,
    6671,
    6739,
    6820,
    6904,
    6946,
    7044,
    7104,
    7228,
    7262,
    7382,
    7390,
    7515,
    7595,
    7687,
  ],
  (4294967295, None): [
    10,
    97,
    181,
    261,
    344,
    393,
    479,
    577,
    688,
    725,
    812,
    868,
    992,
    1046,
    1141,
    1190,
    1281,
    1343,
    1436,
    1504,
    1601,
    1692,
    1695,
    1822,
    1873,
    1926,
    2011,
    2153,
    2160,
    2248,
    2317,
    2444,
    2518,
    2571,
    2620,
    2765,
    2797,
    2851,
    2986,
    3017,
    3102,
    3168,
    3234,
    3363,
    3464,
    3466,
    3615,
    3652,
    3729,
    3802,
    3889,
    4003,
    4004,
    4124,
    4162,
    4307,
    4329,
    4431,
    4531,
    4564,
    4653,
    4721,
    4819,
    4856,
    4970,
    5067,
    5102,
    5182,
    5285,
    5371,
    5448,
    5530,
    5586,
    5654,
    5714,
    5847,
    5897,
    5937,
    6008,
    6157,
    6202,
    6300,
    6341,
    6459,
    6470,
    6550,
    6698,
    6754,
    6792,
    6877,
    6939,
    7023,
    7093,
    7233,
    7278,
    7326,
    7451,
    7523,
    7613,
    7688,
  ],
  (6407814, None): [
    65,
    131,
    205,
    302,
    337,
    409,
    496,
    550,
    676,
    718,
    845,
    907,
    968,
    1061,
    1084,
    1185,
    1291,
    1344,
    1410,
    1534,
    1604,
    1659,
    1723,
    1830,
    1851,
    1975,
    2069,
    2100,
    2200,
    2242,
    2374,
    2392,
    2509,
    2604,
    2659,
    2746,
    2788,
    2892,
    2999,
    3006,
    3143,
    3222,
    3242,
    3378,
    3424,
    3537,
    3566,
    3680,
    3725,
    3801,
    3853,
    3942,
    4050,
    4094,
    4171,
    4235,
    4346,
    4451,
    4483,
    4582,
    4670,
    4745,
    4786,
    4893,
    4943,
    5032,
    5127,
    5178,
    5268,
    5362,
    5390,
    5489,
    5570,
    5647,
    5758,
    5783,
    5891,
    5989,
    6058,
    6152,
    6170,
    6298,
    6344,
    6417,
    6472,
    6608,
    6623,
    6725,
    6787,
    6886,
    6959,
    7008,
    7091,
    7202,
    7264,
    7323,
    7399,
    7520,
    7588,
    7632,
  ],
  (17, 31): [
    71,
    141,
    183,
    245,
    327,
    419,
    512,
    570,
    628,
    712,
    773,
    912,
    927,
    1037,
    1120,
    1216,
    1304,
    1320,
    1425,
    1536,
    1547,
    1647,
    1741,
    1804,
    1921,
    1937,
    2032,
    2127,
    2224,
    2249,
    2361,
    2403,
    2513,
    2545,
    2624,
    2733,
    2804,
    2882,
    2960,
    3059,
    3147,
    3195,
    3279,
    3340,
    3429,
    3504,
    3594,
    3667,
    3750,
    3825,
    3878,
    3927,
    4050,
    4100,
    4165,
    4298,
    4325,
    4422,
    4472,
    4586,
    4624,
    4726,
    4833,
    4918,
    4970,
    5059,
    5127,
    5178,
    5272,
    5359,
    5427,
    5531,
    5612,
    5671,
    5760,
    5776,
    5893,
    5996,
    6011,
    6118,
    6178,
    6240,
    6368,
    6395,
    6479,
    6601,
    6667,
    6704,
    6828,
    6926,
    6936,
    7017,
    7129,
    7166,
    7281,
    7383,
    7422,
    7520,
    7563,
    7634,
  ],
}

GOLDEN_TINY = {  # (seed, id) -> first sinks, the tiny geometry (32 + 1024, 32 active)
  (0, 0): [1, 60, 76, 106, 133, 186, 220, 246],
  (0, 1): [5, 48, 72, 125, 131, 179, 208, 255],
}
ONE_B = SinkGeometry(backbone=500, pool=7692, active=100)


@pytest.mark.parametrize("key,want", GOLDEN_1B.items())
def test_golden_sinks_at_the_1b_geometry(key, want):
  sid, layer = key
  geometry = ONE_B if layer is None else SinkGeometry(500, 7692, 100, per_layer_masks=True)
  got = geometry.sink_indices(sid, layer=layer or 0)
  assert got.tolist() == want
  assert (
    np.flatnonzero(
      np.asarray(geometry.mask(jnp.asarray([sid], jnp.uint32), layer or 0))[0]
    ).tolist()
    == want
  )


@pytest.mark.parametrize("key,prefix", GOLDEN_TINY.items())
def test_golden_sinks_tiny(key, prefix):
  seed, sid = key
  got = SinkGeometry(32, 1024, 32, mask_seed=seed).sink_indices(sid)
  assert got[: len(prefix)].tolist() == prefix


def test_golden_batched_masks():
  """The batched, jit-able path gives the same pinned sinks as the per-id helper."""
  ids = jnp.asarray([0, 1, 2, 7, 12345, 2**31, 2**32 - 1], jnp.uint32)
  m = np.asarray(SinkGeometry(32, 1024, 32, mask_seed=3).mask(ids))
  firsts = [np.flatnonzero(row)[:3].tolist() for row in m]
  assert firsts == [
    [1, 50, 80],
    [11, 51, 93],
    [21, 59, 84],
    [23, 44, 87],
    [10, 49, 85],
    [26, 50, 64],
    [15, 57, 76],
  ]


def test_exactly_active_per_source():
  ids = jnp.asarray(
    np.r_[0, 1, 2**32 - 1, np.random.default_rng(0).integers(0, 2**32, 500)], jnp.uint32
  )
  for pool, active in [(1024, 32), (7692, 100), (10, 10), (100, 1), (97, 13)]:
    m = SinkGeometry(0, pool, active).mask(ids)
    assert m.shape == (len(ids), pool)
    assert np.all(np.asarray(m.sum(-1)) == active)


def test_sink_indices_agree_with_mask():
  g = SinkGeometry(0, 300, 17, mask_seed=5)
  m = np.asarray(g.mask(jnp.asarray([42], jnp.uint32)))[0]
  assert np.flatnonzero(m).tolist() == g.sink_indices(42).tolist()


def test_overlap_statistics_match_random_subsets():
  pool, active, n = 1024, 32, 400
  m = np.asarray(SinkGeometry(0, pool, active).mask(jnp.arange(n, dtype=jnp.uint32)), np.int32)
  overlap = (m @ m.T)[np.triu_indices(n, 1)]
  expected = active**2 / pool  # 1.0: a uniform active-subset gives the same mean
  assert abs(overlap.mean() - expected) < 0.05
  assert overlap.max() <= 8
  usage = m.mean(0)  # every sink serves about active/pool of the sources
  assert abs(usage.mean() - active / pool) < 1e-9
  assert usage.min() > 0 and usage.max() < 0.1


def test_pure_function_of_seed_id_and_geometry():
  ids = jnp.asarray([[3, 9], [9, 3]], jnp.uint32)
  g = SinkGeometry(0, 256, 8, mask_seed=1)
  a = g.mask(ids)
  b = jax.jit(g.mask)(ids)
  assert np.array_equal(a, b)
  assert np.array_equal(a[0, 0], a[1, 1])  # same id, any position in the batch
  other_seed = SinkGeometry(0, 256, 8, mask_seed=2).mask(ids)
  assert not np.array_equal(a[0, 0], other_seed[0, 0])
  assert not np.array_equal(a[0, 0], a[0, 1])


def test_geometries_compare_as_values():
  assert SinkGeometry(8, 64, 4) == SinkGeometry.from_dict(SinkGeometry(8, 64, 4).to_dict())
  assert SinkGeometry(8, 64, 4).differences(SinkGeometry(8, 64, 4, mask_seed=1)) == [
    "mask_seed: 0 vs 1"
  ]


def test_per_layer_masks_differ_by_layer_and_shared_ones_do_not():
  ids = jnp.asarray([11], jnp.uint32)
  per_layer = SinkGeometry(0, 512, 16, per_layer_masks=True)
  layers = [np.asarray(per_layer.mask(ids, layer=i)) for i in range(3)]
  for x, y in itertools.combinations(layers, 2):
    assert not np.array_equal(x, y)
  shared = SinkGeometry(0, 512, 16)
  assert all(np.array_equal(shared.mask(ids, layer=i), shared.mask(ids)) for i in range(3))


def test_union_mask():
  g = SinkGeometry(0, 200, 10)
  u = np.asarray(g.union([4, 5]))
  want = set(g.sink_indices(4)) | set(g.sink_indices(5))
  assert set(np.flatnonzero(u)) == want
  assert not np.asarray(g.union([])).any()


def test_forgetting_budget_matches_the_pool_lost():
  # 1 - (1 - 100/7692)^n: 12% of the pool for 10 sources, 73% for 100
  assert ONE_B.lost_fraction(10) == pytest.approx(0.123, abs=1e-3)
  assert ONE_B.lost_fraction(100) == pytest.approx(0.730, abs=1e-3)
  n = ONE_B.forgetting_budget(0.25)
  assert ONE_B.lost_fraction(n) <= 0.25 < ONE_B.lost_fraction(n + 1)


@pytest.mark.parametrize("bad", [-1, 2**32, 2**40])
def test_out_of_range_ids_are_refused(bad):
  with pytest.raises(ValueError, match="out of range"):
    check_source_ids([0, bad])


def test_non_integer_ids_are_refused():
  with pytest.raises(ValueError, match="integers"):
    check_source_ids([1.5])


def test_bad_geometry():
  with pytest.raises(ValueError, match="active"):
    SinkGeometry(0, 10, 11)
  with pytest.raises(ValueError, match="backbone"):
    SinkGeometry(0, 0, 0)
