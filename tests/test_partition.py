"""Initial partitions and feature-column groups of mixexp.partition."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from mixexp.partition import initial_responsibilities, resolve_feature_groups

N_EXPERTS = 3


@pytest.fixture(scope="module")
def blobs():
    """Three well separated blobs; the second column has a huge scale."""
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(N_EXPERTS), 30)
    centres = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    X = centres[labels] + rng.normal(size=(90, 2))
    X[:, 1] *= 1e4
    return X, labels


def _check_rows(resp, n_samples, n_experts=N_EXPERTS):
    assert resp.shape == (n_samples, n_experts)
    assert np.all(resp >= 0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-10)


def _call(X, partition, n_experts=N_EXPERTS, sample_weight=None, random_state=0):
    if sample_weight is None:
        sample_weight = np.ones(X.shape[0])
    return initial_responsibilities(
        X, partition, n_experts, sample_weight, np.random.RandomState(random_state)
    )


# ---------------------------------------------------------------------------
# initial_responsibilities


def test_kmeans_gives_one_hot_rows_matching_blobs(blobs):
    X, labels = blobs
    resp = _call(X, "kmeans")
    _check_rows(resp, len(X))
    assert set(np.unique(resp)) == {0.0, 1.0}
    np.testing.assert_array_equal(resp.sum(axis=1), 1.0)
    # Clustering is on standardised X, so the huge second column does not
    # swamp the first.
    assert adjusted_rand_score(labels, resp.argmax(axis=1)) == 1.0


def test_kmeans_without_standardisation_would_fail(blobs):
    """Guard for the previous test: unscaled k-means splits differently."""
    X, labels = blobs
    raw = KMeans(n_clusters=N_EXPERTS, n_init=1, random_state=0).fit_predict(X)
    assert adjusted_rand_score(labels, raw) < 0.9


@pytest.mark.parametrize("partition", ["gmm", "random"])
def test_soft_partitions_rows_sum_to_one(blobs, partition):
    X, _ = blobs
    resp = _call(X, partition)
    _check_rows(resp, len(X))


def test_gmm_recovers_blobs(blobs):
    X, labels = blobs
    resp = _call(X, "gmm")
    assert adjusted_rand_score(labels, resp.argmax(axis=1)) == 1.0


def test_random_is_soft_and_centred_on_uniform():
    X = np.random.RandomState(0).normal(size=(2000, 2))
    resp = _call(X, "random", n_experts=4)
    _check_rows(resp, 2000, n_experts=4)
    assert np.all(resp > 0)
    assert np.all(resp < 1)
    np.testing.assert_allclose(resp.mean(axis=0), 0.25, atol=0.02)
    # A flat Dirichlet(1, 1, 1, 1) has marginal variance 3 / 80.
    np.testing.assert_allclose(resp.var(axis=0), 3 / 80, rtol=0.15)


@pytest.mark.parametrize(
    "partition",
    ["kmeans", "gmm", "random", KMeans(n_clusters=5), GaussianMixture()],
    ids=str,
)
def test_single_expert(blobs, partition):
    X, _ = blobs
    np.testing.assert_allclose(_call(X, partition, n_experts=1), 1.0)


@pytest.mark.parametrize(
    "partition",
    [
        "kmeans",
        "gmm",
        "random",
        KMeans(n_clusters=2),
        GaussianMixture(n_components=2),
    ],
    ids=str,
)
def test_same_random_state_same_output(blobs, partition):
    X, _ = blobs
    X = X + np.random.RandomState(3).normal(scale=3.0, size=X.shape)  # overlap
    first = _call(X, partition, random_state=42)
    np.testing.assert_array_equal(_call(X, partition, random_state=42), first)
    seeded = initial_responsibilities(X, partition, N_EXPERTS, np.ones(len(X)), 42)
    np.testing.assert_array_equal(seeded, first)


def test_random_state_changes_random_partition(blobs):
    X, _ = blobs
    assert not np.allclose(_call(X, "random", random_state=0), _call(X, "random", 1))


@pytest.mark.parametrize(
    "clusterer",
    [KMeans(n_clusters=7, n_init=1), AgglomerativeClustering(n_clusters=7)],
    ids=lambda c: type(c).__name__,
)
def test_clusterer_instance_gets_n_experts(blobs, clusterer):
    X, labels = blobs
    resp = _call(X, clusterer)
    _check_rows(resp, len(X))
    assert set(np.unique(resp)) == {0.0, 1.0}
    assert adjusted_rand_score(labels, resp.argmax(axis=1)) == 1.0
    assert clusterer.n_clusters == 7  # the user's object is left alone
    assert not hasattr(clusterer, "labels_")


def test_clusterer_with_predict_proba_gives_probabilities(blobs):
    X, _ = blobs
    rng = np.random.RandomState(4)
    X = X + rng.normal(scale=2.0, size=X.shape)  # overlapping blobs
    # Every starting parameter given: the fit does not depend on the seed.
    init = {
        "weights_init": np.full(3, 1 / 3),
        "means_init": np.array([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        "precisions_init": np.tile(np.eye(2), (3, 1, 1)),
        "tol": 1e-8,
    }
    gmm = GaussianMixture(n_components=2, **init)

    resp = _call(X, gmm)

    _check_rows(resp, len(X))
    # Deterministic initialisation: refit by hand on the standardised inputs.
    Xs = StandardScaler().fit_transform(X)
    reference = GaussianMixture(n_components=3, **init)
    np.testing.assert_allclose(resp, reference.fit(Xs).predict_proba(Xs), atol=1e-8)
    assert np.any((resp > 0.05) & (resp < 0.95))  # soft, not hardened


class _RecordingClusterer(ClusterMixin, BaseEstimator):
    """Splits on the sign of the first column."""

    def __init__(self, n_clusters=2):
        self.n_clusters = n_clusters

    def fit(self, X, y=None, sample_weight=None):
        self.labels_ = (X[:, 0] > 0).astype(int)
        return self


class _FixedProba(BaseEstimator):
    """A clusterer with predict_proba whose size cannot be set."""

    def fit(self, X, y=None):
        return self

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def test_clusterer_receives_weighted_standardised_x():
    rng = np.random.RandomState(12)
    X = rng.normal(loc=[300.0, -3.0], scale=[50.0, 0.01], size=(40, 2))
    weights = rng.uniform(0.1, 3.0, size=40)

    resp = _call(X, _RecordingClusterer(), n_experts=2, sample_weight=weights)

    _check_rows(resp, 40, n_experts=2)
    # The split is on the sign of the first column standardised with the
    # weighted mean (on raw X every row would fall on one side).
    mean = np.average(X[:, 0], weights=weights)
    np.testing.assert_array_equal(resp[:, 1], (X[:, 0] > mean).astype(float))
    # Guard: the unweighted mean would split some rows differently.
    assert np.any((X[:, 0] > mean) != (X[:, 0] > X[:, 0].mean()))
    assert np.all(X[:, 0] > 0)


def test_clusterer_finding_wrong_number_of_clusters():
    rng = np.random.RandomState(6)
    X = rng.normal(size=(30, 2))
    with pytest.raises(ValueError, match="n_experts=3"):
        _call(X, DBSCAN(eps=100.0), n_experts=3)


def test_clusterer_with_wrong_proba_shape():
    X = np.random.RandomState(7).normal(size=(10, 2))
    with pytest.raises(ValueError, match="n_experts"):
        _call(X, _FixedProba(), n_experts=3)
    _check_rows(_call(X, _FixedProba(), n_experts=2), 10, n_experts=2)


@pytest.mark.parametrize("partition", ["k-means", "KMeans", "", "spectral"])
def test_unknown_partition_string(blobs, partition):
    X, _ = blobs
    with pytest.raises(ValueError, match="partition="):
        _call(X, partition)


# ---------------------------------------------------------------------------
# resolve_feature_groups


NAMES = np.array(["a", "b", "c", "d", "e"], dtype=object)


def _groups(groups):
    return [g.tolist() for g in resolve_feature_groups(groups, 5, NAMES)]


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([[0, 1], [2, 3, 4]], [[0, 1], [2, 3, 4]]),
        ([[3, 1, 1]], [[1, 3]]),  # sorted, unique
        ([[-1], [0, -5]], [[4], [0]]),
        ([2, -2], [[2], [3]]),  # single integers
        ([np.int64(1), np.array([0, 4])], [[1], [0, 4]]),
        ([["a", "c"], "e"], [[0, 2], [4]]),
        ([["b", 0]], [[0, 1]]),  # names and indices mixed
        ([np.array(["d", "a"])], [[0, 3]]),
        (
            [[True, False, True, False, False], np.array([0, 0, 0, 1, 1], dtype=bool)],
            [[0, 2], [3, 4]],
        ),
        ([[0, 1, 2], [1, 2, 3], [0, 1, 2]], [[0, 1, 2], [1, 2, 3], [0, 1, 2]]),
        (([0], [1]), [[0], [1]]),  # a tuple of groups
        (
            np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=bool),
            [[0, 1], [2, 3, 4]],
        ),
    ],
)
def test_resolve_feature_groups(groups, expected):
    assert _groups(groups) == expected


def test_resolve_feature_groups_returns_int_arrays():
    resolved = resolve_feature_groups([[1, 0], [True] * 5], 5, None)
    assert all(isinstance(g, np.ndarray) for g in resolved)
    assert all(np.issubdtype(g.dtype, np.integer) for g in resolved)
    assert [g.tolist() for g in resolved] == [[0, 1], [0, 1, 2, 3, 4]]


def test_resolve_feature_groups_without_names_accepts_indices():
    assert [g.tolist() for g in resolve_feature_groups([[0], [-1]], 3, None)] == [
        [0],
        [2],
    ]


@pytest.mark.parametrize(
    ("groups", "names", "match"),
    [
        ([["a"]], None, r"feature_groups\[0\] names column 'a', but X has no"),
        ([[0], ["z"]], NAMES, r"feature_groups\[1\] names column 'z', which is not"),
        ([[5]], NAMES, r"feature_groups\[0\].*n_features=5"),
        ([[0], [-6]], NAMES, r"feature_groups\[1\].*n_features=5"),
        ([[0], []], NAMES, r"feature_groups\[1\] is empty"),
        ([[True, False]], NAMES, r"feature_groups\[0\] is a boolean mask of length 2"),
        ([[False] * 5], NAMES, r"feature_groups\[0\] selects no column"),
        ([], NAMES, "feature_groups must hold at least one"),
    ],
)
def test_resolve_feature_groups_value_errors(groups, names, match):
    with pytest.raises(ValueError, match=match):
        resolve_feature_groups(groups, 5, names)


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ("abc", "feature_groups must be a list"),
        (3, "feature_groups must be a list"),
        (None, "feature_groups must be a list"),
        ((g for g in [[0]]), "feature_groups must be a list"),
        ([[0.5]], r"feature_groups\[0\] holds 0.5"),
        ([[0], [1.0]], r"feature_groups\[1\] holds 1.0"),
        ([[None]], r"feature_groups\[0\] holds None"),
    ],
)
def test_resolve_feature_groups_type_errors(groups, match):
    with pytest.raises(TypeError, match=match):
        resolve_feature_groups(groups, 5, NAMES)
