"""Quality: statistics, threshold calibration, the dataset quality report and UI previews."""
