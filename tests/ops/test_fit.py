"""Template fitting against the per-person NumPy lstsq reference (REFERENCE.md section 3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose2seg_jax.ops.fit import (
    FitResult,
    default_matrix,
    fit_people,
    fit_template,
    matrix_scale,
    select_matrix,
)
from pose2seg_jax.ops.keypoints import FLIP_INDEX
from pose2seg_jax.ops.templates import load_templates

from .reference_fit import ref_default_matrix, ref_fit_template, ref_select_matrix

# Jitted once per shape: eager op-by-op dispatch of these small functions costs seconds.
fit_template_jit = jax.jit(fit_template)
select_matrix_jit = jax.jit(select_matrix)
fit_people_jit = jax.jit(fit_people)


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-4) -> bool:
    """Max abs difference within `rel` of the reference's magnitude (at least 1)."""
    return bool(np.max(np.abs(got - want)) <= rel * max(1.0, float(np.max(np.abs(want)))))


def _random_templates(rng: np.random.Generator, k: int = 3) -> np.ndarray:
    """(2k, 17, 3): k upright-ish random templates with a few invisible joints, then mirrors."""
    base = np.zeros((k, 17, 3))
    for i in range(k):
        base[i, :, 0] = rng.uniform(0.25, 0.75, 17)
        base[i, :, 1] = np.sort(rng.uniform(0.1, 0.9, 17))
        base[i, :, 2] = rng.uniform(0.5, 2.0, 17)
        base[i, rng.choice(17, size=rng.integers(0, 5), replace=False)] = 0.0
    return np.concatenate([base, base[:, FLIP_INDEX]]).astype(np.float32)


def _similarity(rng: np.random.Generator, scale: float) -> np.ndarray:
    """A random unit->feature similarity (3, 3) with the given scale."""
    angle = rng.uniform(-math.pi, math.pi)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, s, rng.uniform(-20, 140)], [-s, c, rng.uniform(-20, 140)], [0, 0, 1.0]])


def _person_from_template(
    rng: np.random.Generator, template: np.ndarray, scale: float, noise: float
) -> np.ndarray:
    """Template joints mapped into feature coordinates, some hidden, some occluded (v = 1)."""
    to_feature = _similarity(rng, scale)
    person = np.zeros((17, 3))
    xy1 = np.concatenate([template[:, :2], np.ones((17, 1))], axis=1)
    person[:, :2] = (xy1 @ to_feature.T)[:, :2] + rng.normal(0, noise, (17, 2))
    person[:, 2] = np.where(rng.random(17) < 0.2, 1.0, 2.0)
    person[template[:, 2] <= 0] = 0.0
    person[rng.random(17) < 0.15] = 0.0
    return person


def _random_people(rng: np.random.Generator, templates: np.ndarray, n: int) -> np.ndarray:
    """(n, 17, 3) people in feature coordinates mixing every case the fit must handle."""
    people = np.zeros((n, 17, 3))
    for i in range(n):
        case = i % 8
        t = templates[rng.integers(len(templates))]
        if case == 0:  # a template under a similarity, with noise
            people[i] = _person_from_template(rng, t, rng.uniform(20, 120), rng.uniform(0, 3))
        elif case == 1:  # tiny person
            people[i] = _person_from_template(rng, t, rng.uniform(0.3, 2.0), 0.01)
        elif case == 2:  # huge person, far outside the feature map
            people[i] = _person_from_template(rng, t, rng.uniform(300, 3000), 5.0)
        elif case == 3:  # joints outside the map
            people[i] = _person_from_template(rng, t, rng.uniform(30, 80), 1.0)
            people[i, :, :2] += rng.choice([-150.0, 200.0], size=2)
        elif case == 4:  # random garbage, random visibility (mostly fails the hard rule)
            people[i, :, :2] = rng.uniform(-10, 140, (17, 2))
            people[i, :, 2] = rng.choice([0.0, 1.0, 2.0], 17)
        elif case == 5:  # fewer than three visible joints
            people[i] = _person_from_template(rng, t, 60.0, 1.0)
            visible = np.flatnonzero(people[i, :, 2] > 0)
            hide = visible[rng.integers(0, 3) :] if len(visible) else visible
            people[i, hide] = 0.0
        elif case == 6:  # exactly three visible
            people[i] = _person_from_template(rng, t, 60.0, 2.0)
            visible = np.flatnonzero(people[i, :, 2] > 0)
            people[i, visible[3:]] = 0.0
        else:  # everything visible
            people[i, :, :2] = rng.uniform(0, 128, (17, 2))
            people[i, :, 2] = 2.0
    people[people[..., 2] == 0] = 0.0
    return people.astype(np.float32)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    templates = _random_templates(rng)
    people = _random_people(rng, templates, 320)
    return templates, people


def test_default_matrix():
    np.testing.assert_array_equal(np.asarray(default_matrix()), ref_default_matrix())
    np.testing.assert_allclose(np.asarray(default_matrix(256, 64)), np.diag([0.25, 0.25, 1.0]))
    assert float(matrix_scale(default_matrix())) == 0.5


def test_fit_template_matches_lstsq_reference(table):
    templates, people = table
    fit_all = jax.jit(jax.vmap(jax.vmap(fit_template, (None, 0)), (0, None)))
    matrices, scores = map(np.asarray, fit_all(people, templates))
    assert np.all(np.isfinite(matrices)) and np.all(np.isfinite(scores))
    fitted = 0
    for i, person in enumerate(people):
        for j, template in enumerate(templates):
            want_matrix, want_score = ref_fit_template(person, template)
            assert _close(matrices[i, j], want_matrix), (i, j, matrices[i, j], want_matrix)
            assert abs(scores[i, j] - want_score) <= 1e-5, (i, j, scores[i, j], want_score)
            fitted += want_score > 0
    # The table must exercise both outcomes in earnest.
    assert 0.15 * scores.size < fitted < 0.85 * scores.size


def test_select_matrix_matches_reference(table):
    templates, people = table
    result = fit_people_jit(people[None], templates)
    assert isinstance(result, FitResult)
    assert result.matrices.shape == (1, len(people), 3, 3)
    assert result.template_index.shape == (1, len(people))
    assert result.template_index.dtype == jnp.int32
    matrices, index, score = (np.asarray(x)[0] for x in result)
    skipped, chosen = 0, 0
    for i, person in enumerate(people):
        want_matrix, want_index, want_score, candidates = ref_select_matrix(person, templates)
        positive = sorted((s for s, scale in candidates if s > 0 and scale > 0.5), reverse=True)
        near_tie = len(positive) > 1 and positive[0] - positive[1] < 1e-5
        near_scale = any(s > 0 and abs(scale - 0.5) < 1e-5 for s, scale in candidates)
        if near_tie or near_scale:
            skipped += 1
            continue
        assert index[i] == want_index, (i, index[i], want_index, candidates)
        assert _close(matrices[i], want_matrix), (i, matrices[i], want_matrix)
        assert abs(score[i] - want_score) <= 1e-5
        chosen += want_index >= 0
    assert skipped <= len(people) // 50
    assert 0.2 * len(people) < chosen < 0.9 * len(people)


def test_exact_template_is_recovered_with_score_one():
    rng = np.random.default_rng(1)
    templates = _random_templates(rng)
    for j in (0, 4):
        template = templates[j]
        to_feature = _similarity(rng, 45.0)
        person = np.zeros((17, 3), np.float32)
        xy1 = np.concatenate([template[:, :2], np.ones((17, 1))], axis=1)
        person[:, :2] = (xy1 @ to_feature.T)[:, :2]
        person[:, 2] = np.where(template[:, 2] > 0, 2.0, 0.0)
        person[person[:, 2] == 0] = 0.0
        matrix, score = fit_template_jit(person, template)
        want = np.diag([64.0, 64.0, 1.0]) @ np.linalg.inv(to_feature)
        assert _close(np.asarray(matrix), want, 1e-5)
        assert float(score) == pytest.approx(1.0, abs=1e-6)
        _, index, best = select_matrix_jit(person, templates)
        assert float(best) == pytest.approx(1.0, abs=1e-6)
        assert np.isclose(ref_select_matrix(person, templates)[2], 1.0)
        assert int(index) == ref_select_matrix(person, templates)[1]


def test_b_sign_convention():
    """A person rotated by +30 degrees in feature space needs A = [[a, b], [-b, a]] with b < 0."""
    template = np.zeros((17, 3), np.float32)
    template[:, 0] = np.linspace(0.2, 0.8, 17)
    template[:, 1] = np.linspace(0.1, 0.9, 17) ** 2
    template[:, 2] = 1.0
    angle = math.radians(30.0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    person = np.concatenate([template[:, :2] @ rot.T * 100.0, np.full((17, 1), 2.0)], axis=1)
    matrix, score = fit_template_jit(person.astype(np.float32), template)
    matrix = np.asarray(matrix) / 64.0
    np.testing.assert_allclose(matrix[:2, :2], rot.T / 100.0, atol=1e-7)
    assert matrix[0, 1] > 0 > matrix[1, 0]
    assert float(score) == pytest.approx(1.0, abs=1e-6)


def test_rules_on_hand_made_cases():
    template = np.zeros((17, 3), np.float32)
    template[:, 0] = np.linspace(0.2, 0.8, 17)
    template[:, 1] = np.cos(np.arange(17)) * 0.3 + 0.5
    template[:, 2] = 1.0
    template[16] = 0.0
    person = np.zeros((17, 3), np.float32)
    person[:, :2] = template[:, :2] * 100.0
    person[:, 2] = 2.0
    person[16] = 0.0

    # |I| = 2: no fit; |I| = 3: fit with score |I| / |U| = 3 / 16.
    two, three = person.copy(), person.copy()
    two[2:] = 0.0
    three[3:] = 0.0
    assert float(fit_template_jit(two, template)[1]) == 0.0
    assert float(fit_template_jit(three, template)[1]) == pytest.approx(3 / 16, abs=1e-6)
    # Hard rule: the person shows a joint the template lacks.
    hard = person.copy()
    hard[16] = (50.0, 50.0, 1.0)
    assert float(fit_template_jit(hard, template)[1]) == 0.0
    # A perfect fit smaller than the default's scale (person larger than the map) is not chosen.
    big = person.copy()
    big[:, :2] *= 2.0
    matrix, score = fit_template_jit(big, template)
    assert float(score) == pytest.approx(1.0) and float(matrix_scale(matrix)) < 0.5
    m, index, s = select_matrix_jit(big, template[None])
    assert int(index) == -1 and float(s) == 0.0
    np.testing.assert_array_equal(np.asarray(m), np.asarray(default_matrix()))


def test_first_maximum_wins():
    rng = np.random.default_rng(2)
    templates = _random_templates(rng)
    templates = np.concatenate([templates[:2], templates[:2]])
    person = _person_from_template(rng, templates[1], 60.0, 1.0).astype(np.float32)
    _, index, _ = select_matrix_jit(person, templates)
    assert int(index) == 1
    assert ref_select_matrix(person, templates)[1] == 1


def test_degenerate_and_padded_people_are_finite():
    templates = load_templates()
    same_point = np.zeros((17, 3), np.float32)
    same_point[:6] = (40.0, 70.0, 2.0)
    garbage = np.full((17, 3), np.nan, np.float32)
    infinite = np.full((17, 3), np.inf, np.float32)
    zeros = np.zeros((17, 3), np.float32)
    batch = np.stack([same_point, garbage, infinite, zeros])[None]
    result = fit_people_jit(batch, templates)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in result)
    assert np.all(np.asarray(result.template_index) == -1)
    # All visible joints at one point: the minimum-norm least-squares solution, like lstsq.
    for template in templates:
        matrix, score = fit_template_jit(same_point, template)
        want, want_score = ref_fit_template(same_point, template)
        assert _close(np.asarray(matrix), want) and float(score) == pytest.approx(
            want_score, abs=1e-6
        )


def test_valid_mask_gives_default():
    rng = np.random.default_rng(3)
    templates = _random_templates(rng)
    people = np.stack(
        [_person_from_template(rng, templates[0], 60.0, 0.5) for _ in range(4)]
    ).astype(np.float32)
    valid = np.array([[True, False, True, False]])
    result = fit_people_jit(people[None], templates, valid)
    unmasked = fit_people_jit(people[None], templates)
    assert np.all(np.asarray(unmasked.template_index) >= 0)
    index = np.asarray(result.template_index)[0]
    assert list(index[[1, 3]]) == [-1, -1] and np.all(index[[0, 2]] >= 0)
    np.testing.assert_array_equal(np.asarray(result.matrices)[0, 1], np.asarray(default_matrix()))
    np.testing.assert_array_equal(np.asarray(result.score)[0, [1, 3]], 0.0)


def test_fit_people_compiles_once():
    traces = []

    def counted(keypoints, templates):
        traces.append(1)
        return fit_people(keypoints, templates)

    jitted = jax.jit(counted)
    rng = np.random.default_rng(4)
    templates = _random_templates(rng)
    for seed in range(3):
        people = _random_people(np.random.default_rng(seed), templates, 12).reshape(2, 6, 17, 3)
        jax.block_until_ready(jitted(people, templates))
    assert len(traces) == 1
    assert jitted._cache_size() == 1
