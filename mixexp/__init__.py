"""mixexp: mixtures of experts as scikit-learn estimators."""

from mixexp._classes import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

__version__ = "0.1.0"

__all__ = ["MixtureOfExpertsClassifier", "MixtureOfExpertsRegressor", "__version__"]
