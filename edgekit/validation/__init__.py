"""``edgekit validate``: accuracy (classifiers) or RMSE/cosine (regressors) of a build on a
labelled data set, against its float reference, with the firmware checked on the first samples."""
from .report import ValidationReport
from .run import DEFAULT_FIRMWARE_COUNT, RESULT_FILE, validate

__all__ = ["DEFAULT_FIRMWARE_COUNT", "RESULT_FILE", "ValidationReport", "validate"]
