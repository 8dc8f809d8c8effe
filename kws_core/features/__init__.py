"""Features: the front ends (incl. the speech embedding), augmentation, the feature cache."""
